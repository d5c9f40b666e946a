use std::process::ExitCode;

#[global_allocator]
static ALLOC: conduit_http::heap::CountingAllocator = conduit_http::heap::CountingAllocator;

fn main() -> ExitCode {
    conduit_http::service::main(
        conduit_agent::INFO,
        conduit_agent::metrics::AgentMetrics::register,
        |router, _metrics| router,
    )
}
