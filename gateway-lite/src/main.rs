use std::process::ExitCode;

#[global_allocator]
static ALLOC: conduit_metrics::heap::CountingAllocator = conduit_metrics::heap::CountingAllocator;

fn main() -> ExitCode {
    conduit_service::main(
        gateway_lite::INFO,
        gateway_lite::metrics::GatewayMetrics::register,
        |router, _metrics| router,
    )
}
