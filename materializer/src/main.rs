use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = materializer::Config::parse();
    shared::telemetry::init(config.runtime.log_format);
    let listener = shared::http::bind(&config.listen).await?;
    let cancel = shared::shutdown::on_signals(config.runtime.shutdown_timeout);
    materializer::run(config, listener, cancel).await
}
