use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = command::Config::parse();
    if let Some(tool) = config.tool {
        return shared::keytool::run(tool);
    }
    shared::telemetry::init(config.runtime.log_format);
    let listener = shared::http::bind(&config.listen).await?;
    let cancel = shared::shutdown::on_signals(config.runtime.shutdown_timeout);
    command::run(config, listener, cancel).await
}
