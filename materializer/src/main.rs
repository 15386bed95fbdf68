use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = materializer::Config::parse();
    analytics_runtime::telemetry::init(config.runtime.log_format);
    let listener = analytics_http::bind(&config.listen).await?;
    let cancel = analytics_runtime::shutdown::on_signals(config.runtime.shutdown_timeout);
    materializer::run(config, listener, cancel).await
}
