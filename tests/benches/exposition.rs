//! `cargo bench -p conduit-tests --bench exposition`: exposition cost of a large registry (~60 families, 5,000
//! series) in both formats, with and without gzip; a full scrape over HTTP through the real
//! server; and the cost of the counting allocator. Reports medians and p99s; not a CI gate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_http::middleware::{HttpMetrics, HttpService};
use conduit_http::router::Router;
use conduit_http::server::{Limits, Server};
use conduit_http::{Method, Response};
use conduit_metrics::catalog::CatalogBuilder;
use conduit_metrics::exposition::{Encoder, Format};
use conduit_metrics::heap::CountingAllocator;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    server_id: String,
    operation: &'static str,
}

/// 24 counter and 24 gauge families of 100 series, 12 histogram families of 17 series: 60
/// families, 5,004 series (the histograms expand to 14 samples each).
fn big_registry() -> (Registry, usize) {
    let mut registry = Registry::default();
    let mut series = 0;
    {
        let mut b = CatalogBuilder::new(&mut registry, "bench", 10_000);
        for f in 0..24 {
            let c = b.counter_family::<Labels>(&format!("counter_{f}"), "A counter family");
            let g = b.gauge_family::<Labels>(&format!("gauge_{f}"), "A gauge family");
            for s in 0..100 {
                let l = Labels {
                    server_id: format!("rack{}-node{s}", f % 4),
                    operation: "power_status",
                };
                c.inc_by(&l, (s * 7919 + f) as u64);
                g.with(&l, |g| g.set(s as i64));
                series += 2;
            }
        }
        for f in 0..12 {
            let h = b.histogram_family::<Labels>(
                &format!("hist_{f}_seconds"),
                "A histogram family",
                conduit_metrics::buckets::HTTP_RPC,
            );
            for s in 0..17 {
                let l = Labels {
                    server_id: format!("node{s}"),
                    operation: "power_on",
                };
                h.observe(&l, s as f64 * 0.01);
                series += 1;
            }
        }
    }
    (registry, series)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (p(0.5), p(0.99))
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    for _ in 0..n / 10 {
        black_box(f());
    }
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    percentiles(samples)
}

fn report(what: &str, (p50, p99): (Duration, Duration), extra: &str) {
    println!(
        "{what:<48} p50 {:>8.3} ms  p99 {:>8.3} ms  {extra}",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

fn scrape(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n")
        .expect("write");
    buf.clear();
    let mut chunk = [0u8; 65536];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return len;
            }
        }
    }
}

fn main() {
    let (registry, series) = big_registry();
    let encoder = Encoder::default();
    let text_len = encoder.encode(&registry, Format::Text, false).len();
    let gz_len = encoder.encode(&registry, Format::Text, true).len();
    println!(
        "registry: 60 families, {series} series; text {text_len} bytes, gzip {gz_len} bytes\n"
    );

    report(
        "encode text 0.0.4",
        time(500, || encoder.encode(&registry, Format::Text, false)),
        "",
    );
    report(
        "encode OpenMetrics",
        time(500, || {
            encoder.encode(&registry, Format::OpenMetrics, false)
        }),
        "",
    );
    report(
        "encode text 0.0.4 + gzip",
        time(300, || encoder.encode(&registry, Format::Text, true)),
        "",
    );
    report(
        "encode OpenMetrics + gzip",
        time(300, || encoder.encode(&registry, Format::OpenMetrics, true)),
        "",
    );

    // A full scrape over loopback through the real server, as Prometheus does it.
    let mut root = Registry::default();
    let http = HttpMetrics::register(&mut CatalogBuilder::new(&mut root, "bench", 10_000));
    let registry = Arc::new(registry);
    let enc = Arc::new(Encoder::default());
    let router = Router::new().route(Method::Get, "/metrics", move |req| {
        let format = Format::from_accept(req.header("Accept"));
        let gzip = conduit_metrics::exposition::wants_gzip(req.header("Accept-Encoding"));
        Response::new(200)
            .with_header("Content-Type", format.content_type())
            .with_header("Content-Encoding", if gzip { "gzip" } else { "identity" })
            .with_body(enc.encode(&registry, format, gzip))
    });
    let server =
        Server::bind("127.0.0.1:0".parse().expect("addr"), Limits::default()).expect("bind");
    let addr = server.local_addr().expect("addr");
    let (stop, handle) = server
        .spawn(Arc::new(HttpService::new(router, http)))
        .expect("spawn server");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::new();
    let body = scrape(&mut stream, &mut buf);
    report(
        "HTTP scrape, OpenMetrics + gzip, keep-alive",
        time(500, || scrape(&mut stream, &mut buf)),
        &format!("({body} byte body)"),
    );
    report(
        "HTTP scrape, OpenMetrics + gzip, new connection",
        time(300, || {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            scrape(&mut s, &mut buf)
        }),
        "",
    );
    drop(stream);
    stop.stop();
    let _ = handle.join();

    // The counting allocator: one relaxed atomic per alloc and per free.
    let layout = Layout::from_size_align(64, 8).expect("layout");
    const N: usize = 2_000_000;
    let bench_alloc = |a: &dyn GlobalAlloc| {
        let t = Instant::now();
        for _ in 0..N {
            // SAFETY: a valid non-zero layout; the pointer is freed with the same layout.
            #[allow(unsafe_code)]
            unsafe {
                let p = a.alloc(layout);
                black_box(p);
                a.dealloc(p, layout);
            }
        }
        t.elapsed().as_secs_f64() * 1e9 / N as f64
    };
    let sys = (0..5)
        .map(|_| bench_alloc(&System))
        .fold(f64::MAX, f64::min);
    let counting = (0..5)
        .map(|_| bench_alloc(&CountingAllocator))
        .fold(f64::MAX, f64::min);
    println!(
        "\nalloc+free 64 B: System {sys:.1} ns, CountingAllocator {counting:.1} ns (+{:.1} ns per pair)",
        counting - sys
    );
}
