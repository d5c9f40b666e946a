//! Gzip framing (RFC 1952) around miniz_oxide's raw deflate.
//!
//! One member, no optional fields: a 10-byte header, the deflate stream, then the CRC-32 and
//! the length of the input. Written here rather than through flate2 because the agent ships on
//! a size budget and flate2's encoder brings crc32fast's 16 KiB slice-by-16 tables with it; a
//! scrape of a few hundred KiB needs no more than a byte-at-a-time CRC.

/// Deflate level 1: scrapes are frequent and metric text compresses well at any level.
const LEVEL: u8 = 1;

/// Gzip-compresses `data` into a single gzip member.
pub fn compress(data: &[u8]) -> Vec<u8> {
    const HEADER: [u8; 10] = [
        0x1f, 0x8b, // magic
        8,    // CM: deflate
        0,    // FLG: no name, comment, extra field or header CRC
        0, 0, 0, 0,   // MTIME: none
        4,   // XFL: fastest compression
        255, // OS: unknown
    ];
    let deflated = miniz_oxide::deflate::compress_to_vec(data, LEVEL);
    let mut out = Vec::with_capacity(HEADER.len() + deflated.len() + 8);
    out.extend_from_slice(&HEADER);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the input length modulo 2^32 (RFC 1952 §2.3.1).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as gzip's trailer wants it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn an_independent_decoder_reads_it_back() {
        for data in [
            &b""[..],
            b"x",
            &b"metric_total{a=\"b\"} 1\n".repeat(5000)[..],
            &(0..=255u8).cycle().take(70_000).collect::<Vec<_>>()[..],
        ] {
            let gz = compress(data);
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
