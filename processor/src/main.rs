use clap::Parser;

fn main() -> anyhow::Result<()> {
    processor::memory::return_large_frees();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let config = processor::Config::parse();
    analytics_runtime::telemetry::init(config.runtime.log_format);
    let listener = analytics_http::bind(&config.listen).await?;
    let cancel = analytics_runtime::shutdown::on_signals(config.runtime.shutdown_timeout);
    processor::run(config, listener, cancel).await
}
