use std::process::ExitCode;

#[global_allocator]
static ALLOC: conduit_http::heap::CountingAllocator = conduit_http::heap::CountingAllocator;

fn main() -> ExitCode {
    conduit_http::service::main(
        gateway_lite::INFO,
        gateway_lite::metrics::GatewayMetrics::register,
        |router, _metrics| router,
    )
}
