//! Content negotiation and encoding of one registry.
//!
//! Both formats come from the same [`Registry`] through [`encode`]; the HTTP handler in
//! The `conduit-service` crate only negotiates ([`Format::from_accept`], [`wants_gzip`]) and serves.

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::registry::Registry;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4, what `promtool check metrics` parses.
    Text,
    /// OpenMetrics 1.0.0 text, what Prometheus asks for first.
    OpenMetrics,
}

impl Format {
    /// Picks the format for an `Accept` header: OpenMetrics when the client lists
    /// `application/openmetrics-text` with a non-zero quality, text 0.0.4 otherwise.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim();
            if media.eq_ignore_ascii_case("application/openmetrics-text") && quality(parts) > 0.0 {
                return Format::OpenMetrics;
            }
        }
        Format::Text
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The `q=` parameter of one media range or coding (1.0 when absent or unreadable).
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> f32 {
    for p in params {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("q") {
                return v.trim().parse().unwrap_or(1.0);
            }
        }
    }
    1.0
}

/// True when an `Accept-Encoding` header accepts gzip (with a non-zero quality).
pub fn wants_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            coding.eq_ignore_ascii_case("gzip") && quality(parts) > 0.0
        })
    })
}

/// Encodes registries into bodies, remembering the last size so the next scrape allocates once.
#[derive(Debug, Default)]
pub struct Encoder {
    size_hint: AtomicUsize,
}

impl Encoder {
    /// Encodes `registry` in `format`, gzip-compressed when `gzip` is set.
    pub fn encode(&self, registry: &Registry, format: Format, gzip: bool) -> Vec<u8> {
        let mut text = String::with_capacity(self.size_hint.load(Ordering::Relaxed) + 1024);
        encode(&mut text, registry, format);
        self.size_hint.store(text.len(), Ordering::Relaxed);
        if gzip {
            crate::gzip::compress(text.as_bytes())
        } else {
            text.into_bytes()
        }
    }
}

/// Encodes `registry` in `format` into `out`.
pub fn encode(out: &mut String, registry: &Registry, format: Format) {
    // Writing into a String cannot fail; a collector that fails leaves its family out.
    let result = match format {
        Format::Text => prometheus_client::encoding::prometheus_text::encode(out, registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(out, registry),
    };
    if let Err(e) = result {
        log::error!("encoding metrics: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_2_42_gets_openmetrics() {
        let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                      version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(accept)), Format::OpenMetrics);
    }

    #[test]
    fn text_only_clients_get_text() {
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0, text/plain")),
            Format::Text
        );
    }

    #[test]
    fn gzip_negotiation() {
        assert!(wants_gzip(Some("gzip")));
        assert!(wants_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(!wants_gzip(Some("gzip;q=0")));
        assert!(!wants_gzip(Some("identity")));
        assert!(!wants_gzip(None));
    }

    #[test]
    fn both_formats_from_one_registry() {
        let mut r = Registry::default();
        let c = prometheus_client::metrics::counter::Counter::<u64>::default();
        r.register("x", "X", c.clone());
        c.inc();
        let enc = Encoder::default();
        let text = String::from_utf8(enc.encode(&r, Format::Text, false)).unwrap();
        let om = String::from_utf8(enc.encode(&r, Format::OpenMetrics, false)).unwrap();
        assert!(
            text.contains("x_total 1") && !text.contains("# EOF"),
            "{text}"
        );
        assert!(om.contains("x_total 1") && om.ends_with("# EOF\n"), "{om}");
        let gz = enc.encode(&r, Format::Text, true);
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back)
            .unwrap();
        assert_eq!(back, text);
    }
}
