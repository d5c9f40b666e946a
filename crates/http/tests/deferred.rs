//! Deferred responses free their worker: with one worker and several slow calls waiting,
//! `/health` still answers at once, and each slow call gets its real answer, counted with its
//! real status.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_http::middleware::{HttpMetrics, HttpService, RpcMetrics};
use conduit_http::router::Router;
use conduit_http::rpc::{unary_deferred, RpcError};
use conduit_http::server::{Limits, Server};
use conduit_http::{Method, Response};
use conduit_metrics::catalog::CatalogBuilder;
use prometheus_client::registry::Registry;

fn get(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn slow_handlers_do_not_hold_the_workers() {
    let mut registry = Registry::default();
    let mut b = CatalogBuilder::new(&mut registry, "test", 100);
    let http = HttpMetrics::register(&mut b);
    let rpc = Arc::new(RpcMetrics::register(&mut b));
    let router = Router::new()
        .route(Method::Get, "/slow", |_| {
            Response::deferred(async {
                async_io::Timer::after(Duration::from_millis(1500)).await;
                Response::text(200, "late\n")
            })
        })
        .route(
            Method::Post,
            "/svc/Busy",
            unary_deferred(
                "svc",
                "Busy",
                Some(Arc::from("t")),
                rpc,
                |_: serde_json::Value| {
                    Box::pin(async {
                        Err::<(), _>(RpcError::exhausted("busy", Duration::from_millis(2500)))
                    })
                },
            ),
        )
        .route(Method::Get, "/health", |_| Response::text(200, "ok\n"));
    let limits = Limits {
        workers: 1,
        ..Limits::default()
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), limits).unwrap();
    let addr = server.local_addr().unwrap();
    let service = Arc::new(HttpService::new(router, http));
    let (stop, handle) = server.spawn(service).unwrap();

    let slow: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || get(addr, "GET /slow HTTP/1.1\r\nConnection: close\r\n\r\n"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let health = get(addr, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "health took {:?}",
        t.elapsed()
    );
    for s in slow {
        let r = s.join().unwrap();
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("late\n"),
            "{r}"
        );
    }

    let busy = get(
        addr,
        "POST /svc/Busy HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(busy.starts_with("HTTP/1.1 429"), "{busy}");
    assert!(busy.contains("Retry-After: 3\r\n"), "{busy}");
    assert!(busy.contains("\"code\":\"resource_exhausted\""), "{busy}");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(
            r#"test_http_requests_total{method="GET",endpoint="/slow",status_code="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"test_rpc_calls_total{service="svc",method="Busy",status="resource_exhausted"} 1"#
        ),
        "{text}"
    );
    stop.stop();
    handle.join().unwrap();
}
