use std::process::ExitCode;

#[global_allocator]
static ALLOC: conduit_http::heap::CountingAllocator = conduit_http::heap::CountingAllocator;

fn main() -> ExitCode {
    conduit_http::service::main(
        manager_lite::INFO,
        manager_lite::metrics::ManagerMetrics::register,
        |router, _metrics| router,
    )
}
