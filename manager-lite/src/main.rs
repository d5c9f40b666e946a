use std::process::ExitCode;

#[global_allocator]
static ALLOC: conduit_metrics::heap::CountingAllocator = conduit_metrics::heap::CountingAllocator;

fn main() -> ExitCode {
    conduit_service::main(
        manager_lite::INFO,
        manager_lite::metrics::ManagerMetrics::register,
        |router, _metrics| router,
    )
}
