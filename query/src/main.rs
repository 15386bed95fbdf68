use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = query::Config::parse();
    if let Some(tool) = config.tool {
        return analytics_edge::keytool::run(tool);
    }
    analytics_runtime::telemetry::init(config.runtime.log_format);
    let listener = analytics_http::bind(&config.listen).await?;
    let cancel = analytics_runtime::shutdown::on_signals(config.runtime.shutdown_timeout);
    query::run(config, listener, cancel).await
}
