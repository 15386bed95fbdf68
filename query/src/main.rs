use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = query::Config::parse();
    shared::telemetry::init(config.runtime.log_format);
    let listener = shared::http::bind(&config.listen).await?;
    query::run(config, listener, shared::shutdown::on_signals()).await
}
