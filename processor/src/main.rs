use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = processor::Config::parse();
    analytics_runtime::telemetry::init(config.runtime.log_format);
    let listener = analytics_http::bind(&config.listen).await?;
    let cancel = analytics_runtime::shutdown::on_signals(config.runtime.shutdown_timeout);
    processor::run(config, listener, cancel).await
}
