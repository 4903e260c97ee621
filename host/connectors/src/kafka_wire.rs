//! The Kafka wire protocol as far as the direct fetch path needs it:
//! ApiVersions and Fetch requests and responses, and record batches
//! (magic 2) with their compression codecs and read-committed filtering.
//!
//! Pure: bytes in, values out, no I/O, so it is unit-tested on hand-built
//! frames. [`crate::kafka_fetch`] does the talking.
//!
//! Why it exists: librdkafka turns every message into a 304-byte op that
//! one thread allocates, another pops under a lock and frees; on a
//! two-core machine that was most of the Kafka source's cost (BENCHMARKS.md).
//! Here a fetch response becomes one buffer per record batch and a vector
//! of (offset, timestamp, value range) per partition.
//!
//! Only non-flexible versions are spoken (Fetch 4 to 11, ApiVersions 0):
//! every broker since Kafka 0.11 takes them, and Kafka 4 still does.

use std::io::Read;

/// A protocol error: the peer sent something this code cannot read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than a field needs.
    #[error("kafka response truncated reading {0}")]
    Truncated(&'static str),
    /// A length or count that cannot be right.
    #[error("kafka response has a bad {0}")]
    Bad(&'static str),
    /// A record batch of a message format before 2 (Kafka 0.10 and older).
    #[error(
        "kafka message format v{0} (before Kafka 0.11) is not read by the direct fetch path; set `wafer.fetch = librdkafka`"
    )]
    OldFormat(i8),
    /// A compressed batch that does not decompress.
    #[error("kafka record batch at offset {offset}: {codec} data does not decompress: {error}")]
    Codec {
        /// The batch's base offset.
        offset: i64,
        /// The codec.
        codec: &'static str,
        /// What went wrong.
        error: String,
    },
}

/// Kafka API keys used here.
pub const API_FETCH: i16 = 1;
/// ApiVersions.
pub const API_VERSIONS: i16 = 18;

/// Highest Fetch version spoken (12 and up are flexible versions).
pub const FETCH_MAX: i16 = 11;
/// Lowest: 4 brings isolation levels and aborted transactions.
pub const FETCH_MIN: i16 = 4;

/// A reader over a response body.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, at: 0 }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Bad(what))?;
        let s = self.b.get(self.at..end).ok_or(WireError::Truncated(what))?;
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn i8(&mut self, what: &'static str) -> Result<i8, WireError> {
        Ok(i8::from_be_bytes(self.arr(what)?))
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.arr(what)?))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.arr(what)?))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.arr(what)?))
    }
    /// An array count: -1 (null) reads as 0.
    fn count(&mut self, what: &'static str) -> Result<usize, WireError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        // Every element takes at least a byte: a count beyond what is left
        // is corrupt (and must not size an allocation).
        if n > self.b.len() - self.at {
            return Err(WireError::Bad(what));
        }
        Ok(n)
    }
    fn string(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let n = self.i16(what)?;
        if n < 0 {
            return Ok("");
        }
        let s = self.take(n as usize, what)?;
        std::str::from_utf8(s).map_err(|_| WireError::Bad(what))
    }
    /// Zigzag varint (records use them for lengths and deltas).
    #[inline]
    fn varlong(&mut self, what: &'static str) -> Result<i64, WireError> {
        // Most are one byte (attributes, deltas, short lengths): a fifth of
        // the fetch thread's time went here before this shortcut.
        if let Some(&byte) = self.b.get(self.at)
            && byte < 0x80
        {
            self.at += 1;
            let v = u64::from(byte);
            return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
        }
        self.varlong_slow(what)
    }

    fn varlong_slow(&mut self, what: &'static str) -> Result<i64, WireError> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.b.get(self.at).ok_or(WireError::Truncated(what))?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(WireError::Bad(what));
            }
        }
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    fn rest(&self) -> usize {
        self.b.len() - self.at
    }
}

/// Appends a request frame (size, header v1, body) to `out`.
pub fn request(out: &mut Vec<u8>, api: i16, version: i16, correlation: i32, client_id: &str, body: &[u8]) {
    let id = &client_id.as_bytes()[..client_id.len().min(i16::MAX as usize)];
    let size = 2 + 2 + 4 + 2 + id.len() + body.len();
    out.extend_from_slice(&(size as i32).to_be_bytes());
    out.extend_from_slice(&api.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(&(id.len() as i16).to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(body);
}

/// The response's correlation id and body (after the size prefix).
pub fn response(frame: &[u8]) -> Result<(i32, &[u8]), WireError> {
    let mut c = Cur::new(frame);
    let id = c.i32("correlation id")?;
    Ok((id, &frame[4..]))
}

/// The Fetch version range an ApiVersions (v0) response grants, if any.
pub fn fetch_versions(body: &[u8]) -> Result<Option<(i16, i16)>, WireError> {
    let mut c = Cur::new(body);
    let err = c.i16("api versions error")?;
    if err != 0 {
        return Err(WireError::Bad("api versions error code"));
    }
    for _ in 0..c.count("api versions")? {
        let (key, min, max) = (c.i16("api key")?, c.i16("min version")?, c.i16("max version")?);
        if key == API_FETCH {
            return Ok(Some((min, max)));
        }
    }
    Ok(None)
}

/// One partition of a fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// Partition number.
    pub partition: i32,
    /// Next offset wanted.
    pub offset: i64,
    /// Most bytes of it in the response.
    pub max_bytes: i32,
}

/// What a fetch asks for.
#[derive(Debug, Clone)]
pub struct FetchRequest<'a> {
    /// How long the broker may wait for `min_bytes`.
    pub max_wait_ms: i32,
    /// Bytes to wait for.
    pub min_bytes: i32,
    /// Most bytes in the response.
    pub max_bytes: i32,
    /// Only committed transactional messages.
    pub read_committed: bool,
    /// Topics with their partitions.
    pub topics: Vec<(&'a str, Vec<FetchPartition>)>,
}

/// The body of a Fetch request of `version` (4 to 11).
pub fn fetch_body(out: &mut Vec<u8>, version: i16, r: &FetchRequest<'_>) {
    let put16 = |out: &mut Vec<u8>, v: i16| out.extend_from_slice(&v.to_be_bytes());
    let put32 = |out: &mut Vec<u8>, v: i32| out.extend_from_slice(&v.to_be_bytes());
    let put64 = |out: &mut Vec<u8>, v: i64| out.extend_from_slice(&v.to_be_bytes());
    put32(out, -1); // replica id: a consumer
    put32(out, r.max_wait_ms);
    put32(out, r.min_bytes);
    put32(out, r.max_bytes);
    out.push(u8::from(r.read_committed));
    if version >= 7 {
        put32(out, 0); // no fetch session
        put32(out, -1);
    }
    put32(out, r.topics.len() as i32);
    for (topic, parts) in &r.topics {
        let t = &topic.as_bytes()[..topic.len().min(i16::MAX as usize)];
        put16(out, t.len() as i16);
        out.extend_from_slice(t);
        put32(out, parts.len() as i32);
        for p in parts {
            put32(out, p.partition);
            if version >= 9 {
                put32(out, -1); // current leader epoch: unknown
            }
            put64(out, p.offset);
            if version >= 5 {
                put64(out, -1); // log start offset: a follower's field
            }
            put32(out, p.max_bytes);
        }
    }
    if version >= 7 {
        put32(out, 0); // forgotten topics
    }
    if version >= 11 {
        put16(out, 0); // rack id ""
    }
}

/// One partition of a fetch response, its records still encoded.
#[derive(Debug)]
pub struct FetchedPartition<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition number.
    pub partition: i32,
    /// Kafka error code (0: none).
    pub error: i16,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// Its last stable offset (-1 if the broker does not say).
    pub last_stable: i64,
    /// Aborted transactions in the range: (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
    /// Record batches (possibly ending in a partial one).
    pub records: &'a [u8],
}

/// A fetch response: the top-level error and the partitions.
pub fn fetch_response(version: i16, body: &[u8]) -> Result<(i16, Vec<FetchedPartition<'_>>), WireError> {
    let mut c = Cur::new(body);
    c.i32("throttle time")?;
    let mut top_error = 0;
    if version >= 7 {
        top_error = c.i16("error code")?;
        c.i32("session id")?;
    }
    let mut out = Vec::new();
    for _ in 0..c.count("topics")? {
        let topic = c.string("topic")?;
        for _ in 0..c.count("partitions")? {
            let partition = c.i32("partition")?;
            let error = c.i16("partition error")?;
            let high_watermark = c.i64("high watermark")?;
            let last_stable = c.i64("last stable offset")?;
            if version >= 5 {
                c.i64("log start offset")?;
            }
            let mut aborted = Vec::new();
            for _ in 0..c.count("aborted transactions")? {
                aborted.push((c.i64("producer id")?, c.i64("first offset")?));
            }
            if version >= 11 {
                c.i32("preferred read replica")?;
            }
            let n = c.i32("records length")?;
            let records = if n <= 0 {
                &[][..]
            } else {
                c.take(n as usize, "records")?
            };
            out.push(FetchedPartition {
                topic,
                partition,
                error,
                high_watermark,
                last_stable,
                aborted,
                records,
            });
        }
    }
    Ok((top_error, out))
}

/// Record values of a partition's fetch, decoded.
#[derive(Debug, Default)]
pub struct Records {
    /// Buffers the values live in: decompressed batches, or the uncompressed
    /// batches' bytes copied once.
    pub bufs: Vec<Vec<u8>>,
    /// Per record: offset, timestamp (epoch ms, -1 unknown) and value as
    /// (buffer, start, length).
    pub recs: Vec<Rec>,
    /// The offset after the last complete batch (skipped ones included),
    /// where the next fetch starts; `None` if there was no complete batch.
    pub next: Option<i64>,
}

/// One record of [`Records`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    /// Offset.
    pub offset: i64,
    /// Timestamp, epoch ms (-1 when unknown).
    pub timestamp: i64,
    /// Index into [`Records::bufs`].
    pub buf: u32,
    /// Start of the value in that buffer.
    pub start: u32,
    /// Its length (0 for a null value).
    pub len: u32,
}

impl Records {
    /// The value of record `r`.
    pub fn value(&self, r: &Rec) -> &[u8] {
        self.bufs
            .get(r.buf as usize)
            .and_then(|b| b.get(r.start as usize..(r.start as usize + r.len as usize)))
            .unwrap_or_default()
    }
}

/// Size of a record batch's header, from its base offset to its record count.
const BATCH_HEADER: usize = 61;

/// Decodes the record batches of one partition's fetch into `out`, from
/// offset `from` on (a fetch may start inside a batch), skipping control
/// batches and, with `read_committed`, aborted transactions (`aborted`:
/// producer id and first offset, per the response).
pub fn decode_records(
    data: &[u8],
    from: i64,
    read_committed: bool,
    aborted: &[(i64, i64)],
    out: &mut Records,
) -> Result<(), WireError> {
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    // By first offset, taken in order as batches pass them.
    aborted.sort_by_key(|&(_, first)| std::cmp::Reverse(first));
    let mut aborting: Vec<i64> = Vec::new();
    let mut c = Cur::new(data);
    while c.rest() >= 17 {
        let start = c.at;
        let base = c.i64("base offset")?;
        let len = c.i32("batch length")?;
        if len < 0 {
            return Err(WireError::Bad("batch length"));
        }
        c.i32("leader epoch")?;
        let magic = c.i8("magic")?;
        if magic < 2 {
            return Err(WireError::OldFormat(magic));
        }
        let end = start + 12 + len as usize;
        if end > data.len() {
            // A partial batch at the end of the response: the next fetch
            // starts there.
            break;
        }
        if (len as usize) + 12 < BATCH_HEADER {
            return Err(WireError::Bad("batch length"));
        }
        let mut h = Cur::new(&data[start + 17..end]);
        h.i32("crc")?;
        let attrs = h.i16("attributes")?;
        let last_delta = h.i32("last offset delta")?;
        let base_ts = h.i64("base timestamp")?;
        let max_ts = h.i64("max timestamp")?;
        let producer = h.i64("producer id")?;
        h.i16("producer epoch")?;
        h.i32("base sequence")?;
        let count = h.i32("record count")?;
        c.at = end;
        let last = base
            .checked_add(i64::from(last_delta))
            .filter(|_| last_delta >= 0)
            .ok_or(WireError::Bad("last offset delta"))?;
        out.next = Some(last + 1);
        let control = attrs & 0x20 != 0;
        let transactional = attrs & 0x10 != 0;
        if read_committed && producer >= 0 {
            while let Some(&(pid, first)) = aborted.last() {
                if first > last {
                    break;
                }
                aborted.pop();
                aborting.push(pid);
            }
            if control {
                // An abort marker ends the producer's aborted transaction.
                if control_type(h.b.get(h.at..).unwrap_or_default()) == Some(0) {
                    aborting.retain(|&p| p != producer);
                }
                continue;
            }
            if transactional && aborting.contains(&producer) {
                continue;
            }
        }
        if control || last < from {
            continue;
        }
        let log_append = attrs & 0x08 != 0;
        let body = &data[start + BATCH_HEADER..end];
        let buf = match attrs & 0x07 {
            0 => body.to_vec(),
            codec => decompress(codec, body, base)?,
        };
        let b = out.bufs.len() as u32;
        let mut r = Cur::new(&buf);
        let count = usize::try_from(count).map_err(|_| WireError::Bad("record count"))?;
        out.recs.reserve(count.min(buf.len()));
        for _ in 0..count {
            let rlen = r.varlong("record length")?;
            let rend = usize::try_from(rlen)
                .ok()
                .and_then(|n| r.at.checked_add(n))
                .ok_or(WireError::Bad("record length"))?;
            r.i8("record attributes")?;
            let ts_delta = r.varlong("timestamp delta")?;
            let off_delta = r.varlong("offset delta")?;
            let klen = r.varlong("key length")?;
            if klen > 0 {
                r.take(klen as usize, "key")?;
            }
            let vlen = r.varlong("value length")?;
            let (vstart, vlen) = if vlen > 0 {
                let at = r.at;
                r.take(vlen as usize, "value")?;
                (at, vlen as usize)
            } else {
                (r.at, 0)
            };
            if rend > buf.len() {
                return Err(WireError::Truncated("record"));
            }
            if r.at > rend {
                return Err(WireError::Bad("record length"));
            }
            // Headers are not read: skip to the record's end.
            r.at = rend;
            // A record outside its batch's range would move the position
            // past records never read.
            if !(0..=i64::from(last_delta)).contains(&off_delta) {
                return Err(WireError::Bad("offset delta"));
            }
            let offset = base + off_delta;
            if offset < from {
                continue;
            }
            let timestamp = if log_append {
                max_ts
            } else {
                base_ts
                    .checked_add(ts_delta)
                    .ok_or(WireError::Bad("timestamp delta"))?
            };
            out.recs.push(Rec {
                offset,
                timestamp,
                buf: b,
                start: u32::try_from(vstart).map_err(|_| WireError::Bad("batch size"))?,
                len: u32::try_from(vlen).map_err(|_| WireError::Bad("value length"))?,
            });
        }
        out.bufs.push(buf);
    }
    Ok(())
}

/// The type of a control batch's record (0 abort, 1 commit), read from its
/// first record's key.
fn control_type(records: &[u8]) -> Option<i16> {
    let mut r = Cur::new(records);
    r.varlong("record length").ok()?;
    r.i8("attributes").ok()?;
    r.varlong("timestamp delta").ok()?;
    r.varlong("offset delta").ok()?;
    let klen = r.varlong("key length").ok()?;
    if klen < 4 {
        return None;
    }
    r.i16("control version").ok()?;
    r.i16("control type").ok()
}

/// Decompresses a batch's records with codec `codec` (1 gzip, 2 snappy,
/// 3 lz4, 4 zstd).
fn decompress(codec: i16, body: &[u8], offset: i64) -> Result<Vec<u8>, WireError> {
    let fail = |codec: &'static str, error: String| WireError::Codec { offset, codec, error };
    // Room for the usual ratio; the fetcher's budget counts capacity.
    let mut out = Vec::with_capacity(body.len().saturating_mul(4));
    match codec {
        1 => {
            // Several members, as Java's GZIPInputStream reads them.
            flate2::read::MultiGzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| fail("gzip", e.to_string()))?;
        }
        2 => out = snappy(body).map_err(|e| fail("snappy", e))?,
        3 => {
            lz4::Decoder::new(body)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(|e| fail("lz4", e.to_string()))?;
        }
        4 => {
            zstd::stream::copy_decode(body, &mut out).map_err(|e| fail("zstd", e.to_string()))?;
        }
        other => return Err(fail("unknown", format!("compression codec {other}"))),
    }
    Ok(out)
}

/// Snappy as Kafka producers write it: raw (librdkafka) or in the Java
/// client's xerial framing (a magic header, then length-prefixed blocks).
fn snappy(body: &[u8]) -> Result<Vec<u8>, String> {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    let mut dec = snap::raw::Decoder::new();
    // The claimed length sizes the allocation: no more than snappy can
    // expand to (its densest element, a 3-byte copy, yields 64 bytes).
    let mut raw = |block: &[u8]| {
        let n = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if n > block.len().saturating_mul(32).saturating_add(64) {
            return Err(format!("claims {n} bytes from {}", block.len()));
        }
        dec.decompress_vec(block).map_err(|e| e.to_string())
    };
    if !body.starts_with(XERIAL) {
        return raw(body);
    }
    let mut c = Cur::new(body.get(16..).ok_or("short xerial header")?);
    let mut out = Vec::new();
    while c.rest() > 0 {
        let n = c.i32("xerial block").map_err(|e| e.to_string())?;
        let block = c
            .take(
                usize::try_from(n).map_err(|_| "bad xerial block")?,
                "xerial block",
            )
            .map_err(|e| e.to_string())?;
        out.extend(raw(block)?);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Zigzag varint, written the obvious way (the decoder reads bytes).
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// A batch of `values` at `base`, timestamps `ts + i`, with attribute
    /// bits `attrs` and producer `pid`; `lz4` compresses its records.
    pub(crate) fn batch(
        base: i64,
        ts: i64,
        values: &[Option<&[u8]>],
        attrs: i16,
        pid: i64,
        lz4: bool,
    ) -> Vec<u8> {
        let mut recs = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut r = Vec::new();
            r.push(0);
            varint(&mut r, i as i64); // timestamp delta
            varint(&mut r, i as i64); // offset delta
            varint(&mut r, 1);
            r.push(b'k');
            match v {
                Some(v) => {
                    varint(&mut r, v.len() as i64);
                    r.extend_from_slice(v);
                }
                None => varint(&mut r, -1),
            }
            varint(&mut r, 1); // a header, skipped
            varint(&mut r, 1);
            r.push(b'h');
            varint(&mut r, 2);
            r.extend_from_slice(b"hv");
            varint(&mut recs, r.len() as i64);
            recs.extend(r);
        }
        let mut attrs = attrs;
        if lz4 {
            let mut enc = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            std::io::Write::write_all(&mut enc, &recs).unwrap();
            recs = enc.finish().0;
            attrs |= 3;
        }
        let mut b = Vec::new();
        b.extend(base.to_be_bytes());
        b.extend(((BATCH_HEADER - 12 + recs.len()) as i32).to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.push(2);
        b.extend(0u32.to_be_bytes());
        b.extend(attrs.to_be_bytes());
        b.extend((values.len() as i32 - 1).max(0).to_be_bytes());
        b.extend(ts.to_be_bytes());
        b.extend((ts + values.len() as i64).to_be_bytes());
        b.extend(pid.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend((values.len() as i32).to_be_bytes());
        b.extend(recs);
        b
    }

    fn decode(
        data: &[u8],
        from: i64,
        committed: bool,
        aborted: &[(i64, i64)],
    ) -> (Vec<(i64, i64, Vec<u8>)>, Option<i64>) {
        let mut out = Records::default();
        decode_records(data, from, committed, aborted, &mut out).unwrap();
        let v = out
            .recs
            .iter()
            .map(|r| (r.offset, r.timestamp, out.value(r).to_vec()))
            .collect();
        (v, out.next)
    }

    #[test]
    fn varints_of_every_width_round_trip() {
        let values = [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            300,
            -300,
            1 << 20,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ];
        let mut data = Vec::new();
        for v in values {
            varint(&mut data, v);
        }
        let mut c = Cur::new(&data);
        for v in values {
            assert_eq!(c.varlong("v"), Ok(v));
        }
        assert_eq!(c.rest(), 0);
        // Cut short, or longer than 10 bytes: errors.
        assert!(Cur::new(&[0x80]).varlong("v").is_err());
        assert!(Cur::new(&[0xff; 11]).varlong("v").is_err());
    }

    #[test]
    fn plain_and_lz4_batches_decode_to_their_values_offsets_and_timestamps() {
        for lz4 in [false, true] {
            let mut data = batch(10, 1000, &[Some(b"a"), None, Some(b"ccc")], 0, -1, lz4);
            data.extend(batch(13, 2000, &[Some(b"d")], 0, -1, lz4));
            let (recs, next) = decode(&data, 0, true, &[]);
            assert_eq!(
                recs,
                vec![
                    (10, 1000, b"a".to_vec()),
                    (11, 1001, vec![]),
                    (12, 1002, b"ccc".to_vec()),
                    (13, 2000, b"d".to_vec())
                ],
                "lz4 {lz4}"
            );
            assert_eq!(next, Some(14));
        }
    }

    #[test]
    fn a_fetch_starting_inside_a_batch_skips_the_earlier_records() {
        let data = batch(10, 0, &[Some(b"a"), Some(b"b"), Some(b"c")], 0, -1, false);
        let (recs, next) = decode(&data, 12, false, &[]);
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![12]);
        assert_eq!(next, Some(13));
    }

    #[test]
    fn a_partial_batch_at_the_end_is_left_for_the_next_fetch() {
        let mut data = batch(0, 0, &[Some(b"a")], 0, -1, false);
        let second = batch(1, 0, &[Some(b"b")], 0, -1, false);
        data.extend(&second[..second.len() - 3]);
        let (recs, next) = decode(&data, 0, false, &[]);
        assert_eq!(recs.len(), 1);
        assert_eq!(next, Some(1));
        // Nothing complete: no next offset.
        assert_eq!(decode(&second[..20], 0, false, &[]), (vec![], None));
    }

    #[test]
    fn log_append_time_batches_stamp_every_record_with_the_batch_time() {
        let data = batch(0, 500, &[Some(b"a"), Some(b"b")], 0x08, -1, false);
        let (recs, _) = decode(&data, 0, false, &[]);
        // max timestamp = base + count, as `batch` writes it.
        assert_eq!(recs.iter().map(|r| r.1).collect::<Vec<_>>(), vec![502, 502]);
    }

    #[test]
    fn read_committed_drops_aborted_transactions_and_every_control_batch() {
        const TXN: i16 = 0x10;
        const CONTROL: i16 = 0x30;
        // Key of a control record: version 0, type 0 (abort) or 1 (commit).
        let marker = |kind: i16| {
            let mut recs = Vec::new();
            let mut r = vec![0];
            varint(&mut r, 0);
            varint(&mut r, 0);
            varint(&mut r, 4);
            r.extend(0i16.to_be_bytes());
            r.extend(kind.to_be_bytes());
            varint(&mut r, -1);
            varint(&mut r, 0);
            varint(&mut recs, r.len() as i64);
            recs.extend(r);
            recs
        };
        let control = |base: i64, pid: i64, kind: i16| {
            let mut b = batch(base, 0, &[Some(b"x")], CONTROL, pid, false);
            b.truncate(BATCH_HEADER);
            let m = marker(kind);
            b[8..12].copy_from_slice(&((BATCH_HEADER - 12 + m.len()) as i32).to_be_bytes());
            b.extend(m);
            b
        };
        let mut data = Vec::new();
        data.extend(batch(0, 0, &[Some(b"p7-aborted")], TXN, 7, false));
        data.extend(batch(1, 0, &[Some(b"p8-committed")], TXN, 8, false));
        data.extend(control(2, 7, 0));
        data.extend(control(3, 8, 1));
        data.extend(batch(4, 0, &[Some(b"plain")], 0, -1, false));
        data.extend(batch(5, 0, &[Some(b"p7-later")], TXN, 7, false));
        data.extend(control(6, 7, 1));
        let values = |committed| {
            let (recs, next) = decode(&data, 0, committed, &[(7, 0)]);
            assert_eq!(next, Some(7));
            recs.into_iter()
                .map(|r| String::from_utf8(r.2).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(values(true), vec!["p8-committed", "plain", "p7-later"]);
        assert_eq!(
            values(false),
            vec!["p7-aborted", "p8-committed", "plain", "p7-later"]
        );
    }

    #[test]
    fn corrupt_batches_are_errors_not_panics() {
        let good = batch(0, 0, &[Some(b"abc"), Some(b"def")], 0, -1, false);
        for cut in 0..good.len() {
            let mut bad = good.clone();
            // Flip one byte anywhere in the records.
            if cut >= BATCH_HEADER {
                bad[cut] ^= 0xff;
            }
            let mut out = Records::default();
            let _ = decode_records(&bad, 0, false, &[], &mut out);
        }
        // A record beyond its batch's last offset delta.
        let mut beyond = good.clone();
        beyond[23..27].copy_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            decode_records(&beyond, 0, false, &[], &mut Records::default()),
            Err(WireError::Bad("offset delta"))
        );
        let mut old = good.clone();
        old[16] = 1;
        let mut out = Records::default();
        assert_eq!(
            decode_records(&old, 0, false, &[], &mut out),
            Err(WireError::OldFormat(1))
        );
        let mut lz = batch(0, 0, &[Some(b"abc")], 0, -1, true);
        let n = lz.len();
        lz[n - 4] ^= 0x55;
        lz[BATCH_HEADER] ^= 0x55;
        assert!(matches!(
            decode_records(&lz, 0, false, &[], &mut Records::default()),
            Err(WireError::Codec { codec: "lz4", .. })
        ));
    }

    #[test]
    fn fetch_requests_carry_each_versions_fields() {
        let req = FetchRequest {
            max_wait_ms: 10,
            min_bytes: 1,
            max_bytes: 1000,
            read_committed: true,
            topics: vec![(
                "t",
                vec![FetchPartition {
                    partition: 3,
                    offset: 42,
                    max_bytes: 100,
                }],
            )],
        };
        // Fixed part 17, topic count 4, topic 2+1, partition count 4,
        // partition 4+8+4.
        let base = 17 + 4 + 3 + 4 + 16;
        for (version, extra) in [
            (4, 0),
            (5, 8),
            (7, 8 + 8 + 4),
            (9, 8 + 8 + 4 + 4),
            (11, 8 + 8 + 4 + 4 + 2),
        ] {
            let mut out = Vec::new();
            fetch_body(&mut out, version, &req);
            assert_eq!(out.len(), base + extra, "v{version}");
        }
        let mut out = Vec::new();
        fetch_body(&mut out, 4, &req);
        assert_eq!(
            &out[out.len() - 16..out.len() - 4],
            &[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 42]
        );
    }

    #[test]
    fn fetch_responses_parse_per_version() {
        let records = batch(5, 0, &[Some(b"v")], 0, -1, false);
        for version in [4i16, 5, 7, 11] {
            let mut b = Vec::new();
            b.extend(0i32.to_be_bytes());
            if version >= 7 {
                b.extend(0i16.to_be_bytes());
                b.extend(0i32.to_be_bytes());
            }
            b.extend(1i32.to_be_bytes());
            b.extend(1i16.to_be_bytes());
            b.push(b't');
            b.extend(1i32.to_be_bytes());
            b.extend(2i32.to_be_bytes());
            b.extend(0i16.to_be_bytes());
            b.extend(6i64.to_be_bytes());
            b.extend(6i64.to_be_bytes());
            if version >= 5 {
                b.extend(0i64.to_be_bytes());
            }
            b.extend(1i32.to_be_bytes());
            b.extend(9i64.to_be_bytes());
            b.extend(3i64.to_be_bytes());
            if version >= 11 {
                b.extend((-1i32).to_be_bytes());
            }
            b.extend((records.len() as i32).to_be_bytes());
            b.extend(&records);
            let (err, parts) = fetch_response(version, &b).unwrap();
            assert_eq!(err, 0);
            assert_eq!(parts.len(), 1);
            let p = &parts[0];
            assert_eq!((p.topic, p.partition, p.high_watermark), ("t", 2, 6));
            assert_eq!(p.aborted, vec![(9, 3)]);
            assert_eq!(p.records, &records[..]);
            // Any truncation is an error, never a panic.
            for cut in 0..b.len() - records.len() {
                assert!(
                    fetch_response(version, &b[..cut]).is_err(),
                    "v{version} cut {cut}"
                );
            }
        }
    }
}
