//! The SDR repository and sensor readings, at a real BMC's pace.
//!
//! # Reading the repository
//!
//! Records are read in chunks under a reservation (Reserve SDR Repository, then Get SDR with
//! offsets): many BMCs, ipmi_sim among them, refuse to return a whole record at once
//! (completion code 0xCA). The chunk size is learned: the first read asks for up to
//! [`FIRST_CHUNK`] bytes and halves on 0xCA (or 0xC7/0xC8, "request too long"), down to
//! [`MIN_CHUNK`]; the size that worked is kept with the cache. The Get SDR offset is one byte,
//! so a record longer than 255 bytes (header 5 + up to 255) has its last chunk start at 255
//! at the latest, re-reading a few bytes rather than wrapping the offset.
//!
//! Records form a chain (each Get SDR answer names the next record ID), which would make a
//! repository take one round trip per chunk. Instead, each round is one batch with several
//! requests outstanding ([`IpmiBmc::request_batch`]): the remaining chunks of every record
//! whose head has arrived, the head of the next record the chain names, and the heads of the
//! records after it when IDs run consecutively, as they do on most BMCs (a guess is only taken
//! once the chain reaches it; a BMC whose IDs do not run so answers "not present" a few times
//! and guessing stops).
//!
//! # Caching and budget ([`SdrCache`])
//!
//! A repository changes with the BMC's firmware or hardware, not between polls. The cache
//! keeps the records with the Get SDR Repository Info they were read under; each
//! [`SdrCache::refresh`] asks for that info (one request) and reads again only when the record
//! count or the addition or erase timestamp differs.
//!
//! A read has a budget of its own, apart from any operation deadline: it stops between rounds
//! once the budget is spent (a round is bounded by the session's [`Timing`](super::client::Timing):
//! per-request timeout and retransmits), keeping every record read so far, and the next
//! refresh goes on from the next record of the chain if the repository info is still the same.
//! A BMC cancels a reservation when its repository changes, but also when another tool
//! reserves: a cancelled reservation (0xC5) is renewed, the repository info checked again, and
//! the read starts over only if that changed. Dropping a refresh mid-round (an operation
//! deadline) loses at most that round.
//!
//! Threshold sensors are then read, several requests outstanding, and converted with their
//! record's linear formula.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ipmi_rs_core::storage::sdr::record::{DataFormat, FullSensorRecord, WithSensorRecordCommon};
use ipmi_rs_core::storage::sdr::Record;

use super::client::{IpmiError, Request};
use super::commands::Timestamp;
use super::IpmiBmc;
pub use super::Queries;

const NETFN_STORAGE: u8 = 0x0A;
const NETFN_SENSOR: u8 = 0x04;
const CMD_GET_SDR_REPOSITORY_INFO: u8 = 0x20;
const CMD_RESERVE_SDR_REPOSITORY: u8 = 0x22;
const CMD_GET_SDR: u8 = 0x23;
const CMD_GET_SENSOR_READING: u8 = 0x2D;
/// Bytes the first Get SDR of a repository asks for (0xFF would mean "the whole record").
pub const FIRST_CHUNK: u8 = 0xFE;
/// The least chunk tried before the BMC's "too long" answers are taken as a failure.
pub const MIN_CHUNK: u8 = 8;
/// Most records read from one repository (a loop guard against a BMC whose "next record"
/// chain never ends).
const MAX_RECORDS: usize = 1024;
/// Reservations renewed in one refresh before giving up (another tool reserving all the time).
const MAX_RESERVATIONS: u32 = 8;
/// Completion codes.
const CC_RESERVATION_CANCELLED: u8 = 0xC5;
const CC_NOT_PRESENT: u8 = 0xCB;
const TOO_LONG: [u8; 3] = [0xCA, 0xC7, 0xC8];

/// A sensor from the repository that has a reading: a threshold sensor (full record, event/
/// reading type 0x01), whose value is converted with the record's formula, or a discrete one
/// (any other type, full or compact record), whose reading is a set of asserted states.
#[derive(Debug, Clone)]
pub struct SensorRecord {
    /// Sensor name from the record (untrusted: sanitize before using it as a label).
    pub name: String,
    /// Sensor number.
    pub number: u8,
    /// Unit label, e.g. `celsius`, `rpm`.
    pub unit: &'static str,
    /// The SDR record ID.
    pub record_id: u16,
    /// Sensor type (IPMI 2.0 table 42-3).
    pub sensor_type: u8,
    /// Event/reading type (0x01 threshold, 0x02-0x0C generic, 0x6F sensor-specific).
    pub event_reading_type: u8,
    // The conversion formula of a threshold sensor with a full record.
    formula: Option<FullSensorRecord>,
}

impl SensorRecord {
    /// Whether this is a threshold sensor (a value and threshold states) rather than a discrete
    /// one (asserted states only).
    pub fn is_threshold(&self) -> bool {
        self.event_reading_type == 0x01
    }
}

/// One sensor reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    /// Sensor name.
    pub name: String,
    /// Unit label.
    pub unit: &'static str,
    /// Converted value; `None` when the BMC says the reading is unavailable, and for discrete
    /// sensors.
    pub value: Option<f64>,
    /// `ok`, `non_critical`, `critical`, `non_recoverable` or `unavailable`; for a discrete
    /// sensor, the most severe of its asserted states ([`sel::state_severity`](super::sel::state_severity)):
    /// `ok`, `non_critical` or `critical`.
    pub state: &'static str,
    /// The SDR record ID.
    pub record_id: u16,
    /// Sensor type (IPMI 2.0 table 42-3).
    pub sensor_type: u8,
    /// Whether the sensor is discrete (states, no value).
    pub discrete: bool,
}

/// Unit label for an IPMI base unit code (IPMI 2.0 table 43-15); `other` beyond the common ones.
pub fn unit_label(code: u8, percentage: bool) -> &'static str {
    if percentage {
        return "percent";
    }
    match code {
        1 => "celsius",
        2 => "fahrenheit",
        3 => "kelvin",
        4 => "volts",
        5 => "amps",
        6 => "watts",
        7 => "joules",
        18 => "rpm",
        19 => "hertz",
        0 => "unspecified",
        _ => "other",
    }
}

/// Get SDR Repository Info (IPMI 2.0 §33.9): what tells whether the repository changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepositoryInfo {
    /// SDR version (0x51 for IPMI 1.5 and 2.0 records).
    pub version: u8,
    /// Records in the repository.
    pub record_count: u16,
    /// Free space in bytes (0xFFFE: 64 KiB or more, 0xFFFF: unspecified).
    pub free_space: u16,
    /// When a record was last added.
    pub last_addition: Timestamp,
    /// When the repository was last erased (or a record deleted).
    pub last_erase: Timestamp,
    /// Operation support bits (overflow, supported updates, commands).
    pub operations: u8,
}

impl RepositoryInfo {
    /// Parses the response data (after the completion code).
    pub fn parse(d: &[u8]) -> Result<RepositoryInfo, IpmiError> {
        let malformed = IpmiError::Malformed("get sdr repository info");
        if d.len() < 14 {
            return Err(malformed);
        }
        Ok(RepositoryInfo {
            version: d[0],
            record_count: u16::from_le_bytes([d[1], d[2]]),
            free_space: u16::from_le_bytes([d[3], d[4]]),
            last_addition: Timestamp::from_le([d[5], d[6], d[7], d[8]]),
            last_erase: Timestamp::from_le([d[9], d[10], d[11], d[12]]),
            operations: d[13],
        })
    }

    /// Whether a repository described by `other` holds the same records: same count, same
    /// addition and erase timestamps (free space and flags may move without the records).
    pub fn same_records(&self, other: &RepositoryInfo) -> bool {
        (self.record_count, self.last_addition, self.last_erase)
            == (other.record_count, other.last_addition, other.last_erase)
    }
}

/// One query; its data after a zero completion code.
pub(crate) async fn query(
    q: &impl Queries,
    what: &'static str,
    netfn: u8,
    cmd: u8,
    data: &[u8],
) -> Result<Vec<u8>, IpmiError> {
    let req = Request {
        netfn,
        cmd,
        data: data.to_vec(),
    };
    let (code, data) = q
        .batch(what, std::slice::from_ref(&req))
        .await?
        .pop()
        .ok_or(IpmiError::Malformed(what))?;
    if code != 0 {
        return Err(IpmiError::Completion { what, code });
    }
    Ok(data)
}

/// Get SDR Repository Info.
pub async fn repository_info(q: &impl Queries) -> Result<RepositoryInfo, IpmiError> {
    let what = "get sdr repository info";
    RepositoryInfo::parse(&query(q, what, NETFN_STORAGE, CMD_GET_SDR_REPOSITORY_INFO, &[]).await?)
}

async fn reserve(q: &impl Queries) -> Result<[u8; 2], IpmiError> {
    let what = "reserve sdr repository";
    let r = query(q, what, NETFN_STORAGE, CMD_RESERVE_SDR_REPOSITORY, &[]).await?;
    r.get(..2)
        .map(|b| [b[0], b[1]])
        .ok_or(IpmiError::Malformed(what))
}

/// The Get SDR reads `(offset, count)` that fill the gaps of a record (`filled[i]`: byte `i`
/// is in), at most `chunk` bytes each. The offset field is one byte: a read that would start
/// past 255 starts at 255 instead, reading again bytes already in.
pub fn plan_reads(filled: &[bool], chunk: u8) -> Vec<(u8, u8)> {
    let chunk = usize::from(chunk.max(1));
    let mut reads = Vec::new();
    let mut i = 0;
    while i < filled.len() {
        if filled[i] {
            i += 1;
            continue;
        }
        let end = filled[i..]
            .iter()
            .position(|&f| f)
            .map_or(filled.len(), |n| i + n)
            .min(i + chunk);
        // end - start <= 260 - 255 = 5 <= chunk when moved.
        let start = i.min(255);
        reads.push((start as u8, (end - start).min(chunk) as u8));
        i = end;
    }
    reads
}

/// A record being read: its bytes so far (the header says how many there are).
#[derive(Debug, Clone)]
struct Partial {
    next: u16,
    bytes: Vec<u8>,
    filled: Vec<bool>,
}

impl Partial {
    fn complete(&self) -> bool {
        self.filled.iter().all(|&f| f)
    }

    fn put(&mut self, offset: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = self.bytes.get_mut(offset + i) {
                *slot = b;
                self.filled[offset + i] = true;
            }
        }
    }
}

/// The Get SDR read size: what the BMC accepts, once a read of that size worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    size: u8,
    known: bool,
}

/// Why a walk stopped before the end of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The end of the chain: every record is read.
    Complete,
    /// The budget is spent.
    OutOfTime,
    /// The BMC cancelled the reservation.
    ReservationCancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The head (and as much more as the chunk holds) of the record with this ID; `guess`
    /// when the chain has not named it yet.
    Head { id: u16, guess: bool },
    /// More bytes of a record whose head is in.
    Tail { id: u16, offset: u8, count: u8 },
}

/// Reading the chain of records, resumable: what is read stays until the repository changes.
#[derive(Debug, Clone)]
struct Walk {
    /// The record to take next (0: the first one).
    cursor: u16,
    done: bool,
    /// Records whose head is in, by the ID they were asked for.
    fetched: BTreeMap<u16, Partial>,
    /// IDs a guess found not present.
    absent: BTreeSet<u16>,
    /// Records taken from the chain, in order: ID and raw bytes (header included).
    taken: Vec<(u16, Vec<u8>)>,
    seen: BTreeSet<u16>,
    misses: usize,
    /// Get SDR requests sent (for tests and benchmarks).
    get_sdr: u64,
}

impl Walk {
    fn new() -> Walk {
        Walk {
            cursor: 0,
            done: false,
            fetched: BTreeMap::new(),
            absent: BTreeSet::new(),
            taken: Vec::new(),
            seen: BTreeSet::new(),
            misses: 0,
            get_sdr: 0,
        }
    }

    /// The first record of the chain not fetched yet, as far as the fetched heads name it
    /// (`None`: the chain ends among them).
    fn frontier(&self) -> Option<u16> {
        let mut id = self.cursor;
        for _ in 0..=self.fetched.len() {
            match self.fetched.get(&id) {
                Some(p) if p.next == 0xFFFF => return None,
                Some(p) => id = p.next,
                None => return Some(id),
            }
        }
        None // a cycle among the fetched heads: taking them ends the walk
    }

    /// The requests of the next round. Guesses wait until the chunk size is known to work
    /// (a read that is refused as too long would fail every guess with it) and until the
    /// first record's ID is known.
    fn plan(&self, chunk: Chunk, window: usize) -> Vec<Ask> {
        let Chunk { size: chunk, known } = chunk;
        let mut asks = Vec::new();
        for (&id, p) in &self.fetched {
            for (offset, count) in plan_reads(&p.filled, chunk) {
                asks.push(Ask::Tail { id, offset, count });
            }
        }
        let Some(first) = self.frontier() else {
            return asks;
        };
        asks.push(Ask::Head {
            id: first,
            guess: false,
        });
        // Guesses: the IDs after the frontier (the first record's ID is unknown when asking
        // for ID 0: 1 and up are the usual ones). A few misses in a row stop guessing.
        let guessing = known && first != 0 && self.misses < 2 * window.max(1);
        let mut heads = 1;
        let mut id = first;
        while guessing && heads < window && id < 0xFFFE {
            id += 1;
            if self.fetched.contains_key(&id) || self.absent.contains(&id) {
                continue;
            }
            asks.push(Ask::Head { id, guess: true });
            heads += 1;
        }
        asks
    }

    /// Takes the complete records the chain has reached.
    fn advance(&mut self) {
        while !self.done {
            let Some(p) = self.fetched.get(&self.cursor) else {
                return;
            };
            if !p.complete() {
                return;
            }
            let Some(p) = self.fetched.remove(&self.cursor) else {
                return;
            };
            let id = u16::from_le_bytes([p.bytes[0], p.bytes[1]]);
            if !self.seen.insert(id) || self.taken.len() >= MAX_RECORDS {
                log::debug!("sdr: the chain comes back to record {id:#06x}; it ends there");
                self.done = true;
                return;
            }
            // Asked for as ID 0, the first record may also have been guessed under its own.
            self.fetched.remove(&id);
            self.taken.push((id, p.bytes));
            if p.next == 0xFFFF || p.next == self.cursor {
                self.done = true;
            }
            self.cursor = p.next;
        }
    }

    /// Reads rounds until the chain ends, the budget is spent (checked between rounds, after
    /// the first) or the reservation is cancelled. `chunk` is lowered when the BMC says a read
    /// asks for too much.
    async fn run(
        &mut self,
        q: &impl Queries,
        reservation: [u8; 2],
        chunk: &mut Chunk,
        deadline: Instant,
    ) -> Result<Stop, IpmiError> {
        let mut first = true;
        // Every round takes a record, fills a gap, shrinks the chunk or learns a guess is
        // wrong; this bounds a BMC whose answers make none of that happen.
        let mut rounds_left = 8 * MAX_RECORDS + 64;
        while !self.done {
            if !first && Instant::now() >= deadline {
                return Ok(Stop::OutOfTime);
            }
            first = false;
            rounds_left = rounds_left
                .checked_sub(1)
                .ok_or(IpmiError::Malformed("get sdr"))?;
            let asks = self.plan(*chunk, q.window());
            let reqs: Vec<Request> = asks
                .iter()
                .map(|a| {
                    let (id, offset, count) = match *a {
                        Ask::Head { id, .. } => (id, 0, chunk.size),
                        Ask::Tail { id, offset, count } => (id, offset, count),
                    };
                    let [lo, hi] = id.to_le_bytes();
                    Request {
                        netfn: NETFN_STORAGE,
                        cmd: CMD_GET_SDR,
                        data: vec![reservation[0], reservation[1], lo, hi, offset, count],
                    }
                })
                .collect();
            self.get_sdr += reqs.len() as u64;
            let replies = q.batch("get sdr", &reqs).await?;
            let mut cancelled = false;
            let mut too_long = false;
            for (ask, (code, data)) in asks.into_iter().zip(replies) {
                match code {
                    0 => chunk.known = true,
                    CC_RESERVATION_CANCELLED => {
                        cancelled = true;
                        continue;
                    }
                    c if TOO_LONG.contains(&c) => {
                        too_long = true;
                        continue;
                    }
                    c => match ask {
                        // Nothing at ID 0: the repository is empty.
                        Ask::Head {
                            id: 0,
                            guess: false,
                        } if c == CC_NOT_PRESENT && self.taken.is_empty() => {
                            self.done = true;
                            continue;
                        }
                        Ask::Head { id, guess: true } => {
                            if c != CC_NOT_PRESENT {
                                log::debug!("sdr: guessed record {id:#06x}: code {c:#04x}");
                            }
                            self.absent.insert(id);
                            self.misses += 1;
                            continue;
                        }
                        _ => {
                            return Err(IpmiError::Completion {
                                what: "get sdr",
                                code: c,
                            })
                        }
                    },
                }
                if data.len() < 3 {
                    return Err(IpmiError::Malformed("get sdr"));
                }
                let next = u16::from_le_bytes([data[0], data[1]]);
                let bytes = &data[2..];
                match ask {
                    Ask::Head { id, guess } => {
                        if bytes.len() < 5 {
                            if guess {
                                self.absent.insert(id);
                                continue;
                            }
                            return Err(IpmiError::Malformed("get sdr"));
                        }
                        if guess {
                            self.misses = 0;
                        }
                        let total = 5 + usize::from(bytes[4]);
                        let mut p = Partial {
                            next,
                            bytes: vec![0; total],
                            filled: vec![false; total],
                        };
                        p.put(0, bytes);
                        self.fetched.insert(id, p);
                    }
                    Ask::Tail { id, offset, .. } => {
                        let Some(p) = self.fetched.get_mut(&id) else {
                            continue;
                        };
                        if next != p.next {
                            // Its chunks disagree on the chain: the record changed under us.
                            cancelled = true;
                            continue;
                        }
                        p.put(usize::from(offset), bytes);
                    }
                }
            }
            if too_long {
                if chunk.size <= MIN_CHUNK {
                    return Err(IpmiError::Completion {
                        what: "get sdr",
                        code: TOO_LONG[0],
                    });
                }
                *chunk = Chunk {
                    size: (chunk.size / 2).max(MIN_CHUNK),
                    known: false,
                };
                log::debug!("sdr: trying reads of {} bytes", chunk.size);
            }
            self.advance();
            if cancelled {
                return Ok(Stop::ReservationCancelled);
            }
        }
        Ok(Stop::Complete)
    }
}

/// What a [`SdrCache::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The repository info is unchanged and every record was read before: nothing read.
    Cached,
    /// The read is complete (from scratch, or finishing one the budget had cut short).
    Read,
    /// The budget ran out first: the sensors read so far are there, and the next refresh
    /// goes on from where this one stopped.
    Partial,
}

/// The threshold sensors of a BMC's repository, kept with the repository info they were read
/// under; see the module docs.
#[derive(Debug, Clone)]
pub struct SdrCache {
    info: Option<RepositoryInfo>,
    walk: Walk,
    chunk: Chunk,
    records: Vec<Record>,
    // Records of the walk parsed into `records` so far.
    parsed: usize,
    sensors: Vec<SensorRecord>,
    get_sdr: u64,
}

impl Default for SdrCache {
    fn default() -> Self {
        SdrCache::new()
    }
}

impl SdrCache {
    /// An empty cache: the first refresh reads the whole repository.
    pub fn new() -> SdrCache {
        SdrCache {
            info: None,
            walk: Walk::new(),
            chunk: Chunk {
                size: FIRST_CHUNK,
                known: false,
            },
            records: Vec::new(),
            parsed: 0,
            sensors: Vec::new(),
            get_sdr: 0,
        }
    }

    /// Checks the repository info and reads what is needed (nothing when it is unchanged and
    /// the records are all in), for at most about `budget` (see the module docs: a round in
    /// progress is finished).
    pub async fn refresh(
        &mut self,
        q: &impl Queries,
        budget: Duration,
    ) -> Result<Refresh, IpmiError> {
        let deadline = Instant::now() + budget;
        let info = repository_info(q).await?;
        if !self.info.is_some_and(|old| old.same_records(&info)) {
            self.start_over(info);
        } else if self.walk.done {
            return Ok(Refresh::Cached);
        }
        let mut reservations = 0;
        loop {
            let reservation = reserve(q).await?;
            let stop = self
                .walk
                .run(q, reservation, &mut self.chunk, deadline)
                .await;
            self.take_records();
            match stop? {
                Stop::Complete => return Ok(Refresh::Read),
                Stop::OutOfTime => return Ok(Refresh::Partial),
                Stop::ReservationCancelled => {
                    reservations += 1;
                    if reservations > MAX_RESERVATIONS {
                        return Err(IpmiError::Completion {
                            what: "get sdr",
                            code: CC_RESERVATION_CANCELLED,
                        });
                    }
                    // Another tool's reservation, or a changed repository: only the latter
                    // makes what was read stale.
                    let now = repository_info(q).await?;
                    if !self.info.is_some_and(|old| old.same_records(&now)) {
                        log::debug!("sdr: the repository changed during the read; starting over");
                        self.start_over(now);
                    }
                    // Heads and chunks read under the old reservation are kept: the content
                    // is the same. Only partial records are read again, in case.
                    self.walk.fetched.retain(|_, p| p.complete());
                }
            }
        }
    }

    fn start_over(&mut self, info: RepositoryInfo) {
        self.get_sdr += self.walk.get_sdr;
        self.info = Some(info);
        self.walk = Walk::new();
        self.records.clear();
        self.parsed = 0;
        self.sensors.clear();
    }

    /// Parses the records the walk took since the last call.
    fn take_records(&mut self) {
        for (id, raw) in &self.walk.taken[self.parsed..] {
            if !parsable(raw) {
                log::debug!("sdr record {id:#06x} skipped: reserved ID string modifier");
                continue;
            }
            match Record::parse(raw) {
                Ok(r) => self.records.push(r),
                Err(e) => log::debug!("sdr record {id:#06x} skipped: {e:?}"),
            }
        }
        self.parsed = self.walk.taken.len();
        self.sensors = sensor_records(&self.records);
    }

    /// The repository info the records were read under (`None` before the first refresh).
    pub fn info(&self) -> Option<RepositoryInfo> {
        self.info
    }

    /// Whether every record of the repository is in.
    pub fn is_complete(&self) -> bool {
        self.walk.done
    }

    /// The threshold sensors read (all of them once [`SdrCache::is_complete`]).
    pub fn sensors(&self) -> &[SensorRecord] {
        &self.sensors
    }

    /// Every record read that ipmi-rs-core parses, in the repository's order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Get SDR requests sent since the cache was made (what a cached refresh does not add to).
    pub fn get_sdr_requests(&self) -> u64 {
        self.get_sdr + self.walk.get_sdr
    }

    /// The chunk size the BMC accepted (what the next read starts with).
    pub fn chunk(&self) -> u8 {
        self.chunk.size
    }
}

/// Reads every record of the repository, parsed; records ipmi-rs-core cannot parse are skipped.
/// No budget and no cache: [`SdrCache`] is the one for polling.
pub async fn read_repository(bmc: &IpmiBmc) -> Result<Vec<Record>, IpmiError> {
    let mut cache = SdrCache::new();
    // Over a day: the session's timeouts bound each round, MAX_RECORDS the rounds.
    cache.refresh(bmc, Duration::from_secs(100_000)).await?;
    Ok(cache.records)
}

/// The sensors with a reading of a repository: full and compact sensor records (event-only
/// records have none). A compact record shared by several sensors (record sharing) stands
/// for each of them, numbered and named on from the first as IPMI 2.0 §43.2 says.
pub fn sensor_records(records: &[Record]) -> Vec<SensorRecord> {
    use ipmi_rs_core::storage::sdr::record::RecordContents;
    let mut out = Vec::new();
    for r in records {
        let (common, formula, sharing) = match &r.contents {
            RecordContents::FullSensor(f) => (f.common(), Some(f), None),
            RecordContents::CompactSensor(c) => (c.common(), None, Some(&c.record_sharing)),
            _ => continue,
        };
        let units = common.sensor_units;
        let event_reading_type = reading_type_code(common.event_reading_type_code);
        let base = SensorRecord {
            name: common.sensor_id.to_string(),
            number: common.key.sensor_number.get(),
            unit: unit_label(u8::from(units.base_unit), units.is_percentage),
            record_id: r.header.id.value(),
            sensor_type: u8::from(common.ty),
            event_reading_type,
            formula: formula.filter(|_| event_reading_type == 0x01).cloned(),
        };
        match sharing.filter(|s| s.share_count > 1) {
            None => out.push(base),
            Some(s) => {
                for i in 0..s.share_count {
                    let n = s.modifier_offset + i;
                    // ipmi-rs-core does not export the modifier's type, only its Debug.
                    let suffix = if format!("{:?}", s.id_string_modifier) == "Alpha" {
                        alpha(n)
                    } else {
                        n.to_string()
                    };
                    out.push(SensorRecord {
                        name: format!("{}{suffix}", base.name),
                        number: base.number.wrapping_add(i),
                        ..base.clone()
                    });
                }
            }
        }
    }
    out
}

/// The code ipmi-rs-core parsed into `c`.
fn reading_type_code(
    c: ipmi_rs_core::storage::sdr::event_reading_type_code::EventReadingTypeCodes,
) -> u8 {
    use ipmi_rs_core::storage::sdr::event_reading_type_code::EventReadingTypeCodes as C;
    match c {
        C::Unspecified => 0x00,
        C::Threshold => 0x01,
        C::SensorSpecific => 0x6F,
        C::DiscreteGeneric(v) | C::Oem(v) | C::Reserved(v) => v,
    }
}

/// An alphabetic instance modifier: 'A'..'Z', then 'BA', 'BB', ... (base 26).
fn alpha(mut n: u8) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b'A' + n % 26);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Whether `raw` (a record, header included) is safe to hand to ipmi-rs-core 0.6's parser,
/// which panics on some records a BMC can send: a compact record whose ID string instance
/// modifier type (byte 24, bits 5:4) is one of the reserved values 2 or 3, and records shorter
/// than their type's fixed part, where it indexes past its own length checks (full sensor
/// records of 15-17 or 42 bytes after the header, FRU device locators of 8-10). Such records
/// are skipped; a record of the spec's length (IPMI 2.0 §43) is unaffected.
pub fn parsable(raw: &[u8]) -> bool {
    const SHARING: usize = 23;
    let body = raw.len().saturating_sub(5);
    match raw.get(3) {
        // Full sensor record: 48 bytes before the ID string.
        Some(0x01) => body >= 43,
        // Compact sensor record: 32 bytes before the ID string.
        Some(0x02) => body >= 27 && raw.get(SHARING).is_some_and(|b| (b >> 4) & 0x3 < 2),
        // FRU device locator: 16 bytes before the ID string.
        Some(0x11) => body >= 11,
        _ => true,
    }
}

/// Converts a raw reading with the record's linear formula, `y = (M x + B 10^Bexp) 10^Rexp`.
/// Non-linear sensors are not converted (`None`).
pub fn convert(record: &FullSensorRecord, raw: u8) -> Option<f64> {
    use ipmi_rs_core::storage::sdr::record::Linearization;
    if !matches!(record.linearization, Linearization::Linear) {
        return None;
    }
    let x = match record.analog_data_format? {
        DataFormat::Unsigned => f64::from(raw),
        // One's complement: a set sign bit means -(the inverted bits).
        DataFormat::OnesComplement if raw & 0x80 != 0 => -f64::from(!raw),
        DataFormat::OnesComplement => f64::from(raw),
        DataFormat::TwosComplement => f64::from(raw as i8),
    };
    // Dividing by a power of ten rather than multiplying by its inexact inverse: 1104 / 100
    // is the double nearest 11.04, 1104 * 0.01 is not (11.040000000000001).
    let scale = |v: f64, exp: i8| match exp {
        e if e < 0 => v / 10f64.powi(-i32::from(e)),
        e => v * 10f64.powi(i32::from(e)),
    };
    let b = scale(f64::from(record.b), record.b_exponent);
    Some(scale(f64::from(record.m) * x + b, record.result_exponent))
}

/// [`convert`] for a sensor record (tests outside this module).
#[cfg(test)]
pub(crate) fn convert_for_test(sensor: &SensorRecord, raw: u8) -> Option<f64> {
    sensor.formula.as_ref().and_then(|f| convert(f, raw))
}

/// The state bits of a Get Sensor Reading response (byte 3, threshold sensors).
pub fn threshold_state(status: u8) -> &'static str {
    if status & 0x24 != 0 {
        "non_recoverable"
    } else if status & 0x12 != 0 {
        "critical"
    } else if status & 0x09 != 0 {
        "non_critical"
    } else {
        "ok"
    }
}

/// The state of a discrete sensor: the most severe of the states its reading asserts (bytes 3
/// and 4 of the response, states 0-14).
pub fn discrete_state(sensor: &SensorRecord, low: u8, high: u8) -> &'static str {
    use super::sel::{state_severity, Severity};
    let bits = u16::from_le_bytes([low, high & 0x7F]);
    let worst = (0..15u8)
        .filter(|o| bits & (1 << o) != 0)
        .map(|o| state_severity(sensor.event_reading_type, sensor.sensor_type, o))
        .max()
        .unwrap_or(Severity::Info);
    match worst {
        Severity::Info => "ok",
        Severity::Warning => "non_critical",
        Severity::Critical => "critical",
    }
}

/// A Get Sensor Reading answer, converted: completion codes other than 0 (0xCB "not present",
/// 0xD5 "not in present state", ...) and the "reading unavailable" or "scanning disabled"
/// bits make the sensor unavailable, not the BMC.
fn reading(sensor: &SensorRecord, code: u8, r: &[u8]) -> Result<SensorReading, IpmiError> {
    let read = |value, state| SensorReading {
        name: sensor.name.clone(),
        unit: sensor.unit,
        value,
        state,
        record_id: sensor.record_id,
        sensor_type: sensor.sensor_type,
        discrete: !sensor.is_threshold(),
    };
    if code != 0 {
        return Ok(read(None, "unavailable"));
    }
    if r.len() < 2 {
        return Err(IpmiError::Malformed("get sensor reading"));
    }
    if r[1] & 0x20 != 0 || r[1] & 0x40 == 0 {
        return Ok(read(None, "unavailable"));
    }
    let low = r.get(2).copied().unwrap_or(0);
    if !sensor.is_threshold() {
        return Ok(read(
            None,
            discrete_state(sensor, low, r.get(3).copied().unwrap_or(0)),
        ));
    }
    let value = sensor.formula.as_ref().and_then(|f| convert(f, r[0]));
    Ok(read(value, threshold_state(low)))
}

fn reading_request(sensor: &SensorRecord) -> Request {
    Request {
        netfn: NETFN_SENSOR,
        cmd: CMD_GET_SENSOR_READING,
        data: vec![sensor.number],
    }
}

/// Reads one sensor.
pub async fn read_sensor(bmc: &IpmiBmc, sensor: &SensorRecord) -> Result<SensorReading, IpmiError> {
    let (code, data) = bmc
        .request_batch("get sensor reading", &[reading_request(sensor)])
        .await?
        .pop()
        .ok_or(IpmiError::Malformed("get sensor reading"))?;
    reading(sensor, code, &data)
}

/// Reads every sensor, several requests outstanding at once; the readings in `sensors`' order.
pub async fn read_sensors(
    q: &impl Queries,
    sensors: &[SensorRecord],
) -> Result<Vec<SensorReading>, IpmiError> {
    let reqs: Vec<Request> = sensors.iter().map(reading_request).collect();
    let replies = q.batch("get sensor reading", &reqs).await?;
    sensors
        .iter()
        .zip(replies)
        .map(|(s, (code, data))| reading(s, code, &data))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use ipmi_rs_core::storage::sdr::SdrRecordInfo as RecordInfo;
    use std::cell::{Cell, RefCell};

    /// The CPU Temp full sensor record of tests/peers/ipmi/bmc.emu, as Get SDR returns it.
    const CPU_TEMP: [u8; 56] = [
        0x00, 0x00, 0x51, 0x01, 0x33, 0x20, 0x00, 0x01, 0x03, 0x01, 0x67, 0x68, 0x01, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x38, 0x38, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x5a, 0x50, 0x46, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00,
        0x00, 0x00, 0xc8, 0x43, 0x50, 0x55, 0x20, 0x54, 0x65, 0x6d, 0x70,
    ];

    #[test]
    fn threshold_states() {
        assert_eq!(threshold_state(0x00), "ok");
        assert_eq!(threshold_state(0x08), "non_critical");
        assert_eq!(threshold_state(0x01), "non_critical");
        assert_eq!(threshold_state(0x10 | 0x08), "critical");
        assert_eq!(threshold_state(0x20), "non_recoverable");
    }

    #[test]
    fn units() {
        assert_eq!(unit_label(1, false), "celsius");
        assert_eq!(unit_label(18, false), "rpm");
        assert_eq!(unit_label(1, true), "percent");
        assert_eq!(unit_label(200, false), "other");
    }

    #[test]
    fn ipmi_sim_records_parse_and_convert() {
        // The two full sensor records of tests/peers/ipmi/bmc.emu, as Get SDR returns them.
        let cpu: Vec<u8> = [
            0x00, 0x00, 0x51, 0x01, 0x33, 0x20, 0x00, 0x01, 0x03, 0x01, 0x67, 0x68, 0x01, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x38, 0x38, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x5a, 0x50, 0x46, 0x00, 0x00, 0x00,
            0x02, 0x02, 0x00, 0x00, 0x00, 0xc8, 0x43, 0x50, 0x55, 0x20, 0x54, 0x65, 0x6d, 0x70,
        ]
        .to_vec();
        let mut with_next = vec![0xFF, 0xFF];
        with_next.extend_from_slice(&cpu);
        let rec = RecordInfo::parse(&with_next).unwrap().record;
        let sensors = sensor_records(&[rec]);
        assert_eq!(sensors.len(), 1);
        assert_eq!(
            (sensors[0].name.as_str(), sensors[0].number, sensors[0].unit),
            ("CPU Temp", 1, "celsius")
        );
        assert_eq!(
            convert(sensors[0].formula.as_ref().unwrap(), 0x28),
            Some(40.0)
        );

        // The same record declaring one's-complement readings (sensor units 1, bits 7:6 = 01).
        let mut ones = vec![0xFF, 0xFF];
        ones.extend_from_slice(&cpu);
        ones[2 + 20] = 0x40;
        let rec = RecordInfo::parse(&ones).unwrap().record;
        let s = &sensor_records(&[rec])[0];
        assert_eq!(convert(s.formula.as_ref().unwrap(), 0x05), Some(5.0));
        assert_eq!(convert(s.formula.as_ref().unwrap(), 0xFA), Some(-5.0));
        assert_eq!(convert(s.formula.as_ref().unwrap(), 0xFF), Some(-0.0));
    }

    /// The CPU Temp record of tests/peers/ipmi/bmc.emu as record `id`, sensor `number`,
    /// named `name`.
    fn sensor_record(id: u16, number: u8, name: &str) -> Vec<u8> {
        let mut r = CPU_TEMP[..47].to_vec();
        r[..2].copy_from_slice(&id.to_le_bytes());
        r[7] = number;
        r.push(0xC0 | name.len() as u8);
        r.extend_from_slice(name.as_bytes());
        r[4] = (r.len() - 5) as u8;
        r
    }

    /// An OEM record (type 0xC0) of the greatest length: 5 + 255 bytes.
    fn oem_record(id: u16) -> Vec<u8> {
        let mut r = id.to_le_bytes().to_vec();
        r.extend_from_slice(&[0x51, 0xC0, 0xFF]);
        r.extend((0..255u32).map(|i| (i as u8) ^ 0x5A));
        r
    }

    /// A BMC in-process: answers Get SDR Repository Info, Reserve SDR Repository, Get SDR (as
    /// ipmi_sim does: reservation checked, at most `max_read` bytes a read) and Get Sensor
    /// Reading (sensor `n` reads `n`, sensor 3 is not present) from its records.
    struct Fake {
        records: RefCell<Vec<Vec<u8>>>,
        max_read: usize,
        window: usize,
        reservation: Cell<u16>,
        added: Cell<u32>,
        /// Another tool reserves after this many more Get SDR.
        cancel_after: Cell<Option<usize>>,
        /// Requests by command.
        counts: RefCell<BTreeMap<u8, usize>>,
        /// (record ID, offset, count) of every Get SDR.
        reads: RefCell<Vec<(u16, u8, u8)>>,
    }

    impl Fake {
        fn new(records: Vec<Vec<u8>>, max_read: usize) -> Fake {
            Fake {
                records: RefCell::new(records),
                max_read,
                window: 4,
                reservation: Cell::new(0),
                added: Cell::new(0x100),
                cancel_after: Cell::new(None),
                counts: RefCell::new(BTreeMap::new()),
                reads: RefCell::new(Vec::new()),
            }
        }

        fn count(&self, cmd: u8) -> usize {
            self.counts.borrow().get(&cmd).copied().unwrap_or(0)
        }

        fn add(&self, record: Vec<u8>) {
            self.records.borrow_mut().push(record);
            self.added.set(self.added.get() + 1);
            self.reservation.set(self.reservation.get() + 1);
        }

        fn answer(&self, r: &Request) -> (u8, Vec<u8>) {
            *self.counts.borrow_mut().entry(r.cmd).or_default() += 1;
            let records = self.records.borrow();
            let d = &r.data;
            match (r.netfn, r.cmd) {
                (NETFN_STORAGE, CMD_GET_SDR_REPOSITORY_INFO) => {
                    let mut info = vec![0x51];
                    info.extend_from_slice(&(records.len() as u16).to_le_bytes());
                    info.extend_from_slice(&0xFFFEu16.to_le_bytes());
                    info.extend_from_slice(&self.added.get().to_le_bytes());
                    info.extend_from_slice(&0u32.to_le_bytes());
                    info.push(0x02);
                    (0, info)
                }
                (NETFN_STORAGE, CMD_RESERVE_SDR_REPOSITORY) => {
                    self.reservation.set(self.reservation.get() + 1);
                    (0, self.reservation.get().to_le_bytes().to_vec())
                }
                (NETFN_STORAGE, CMD_GET_SDR) => {
                    if let Some(n) = self.cancel_after.get() {
                        if n == 0 {
                            self.reservation.set(self.reservation.get() + 1);
                            self.cancel_after.set(None);
                        } else {
                            self.cancel_after.set(Some(n - 1));
                        }
                    }
                    let id = u16::from_le_bytes([d[2], d[3]]);
                    self.reads.borrow_mut().push((id, d[4], d[5]));
                    if u16::from_le_bytes([d[0], d[1]]) != self.reservation.get() {
                        return (CC_RESERVATION_CANCELLED, vec![]);
                    }
                    let at = if id == 0 {
                        Some(0)
                    } else {
                        records
                            .iter()
                            .position(|r| u16::from_le_bytes([r[0], r[1]]) == id)
                    };
                    let Some(at) = at.filter(|&at| at < records.len()) else {
                        return (CC_NOT_PRESENT, vec![]);
                    };
                    let rec = &records[at];
                    let (offset, count) = (usize::from(d[4]), usize::from(d[5]));
                    if offset >= rec.len() {
                        return (0xC9, vec![]);
                    }
                    let count = count.min(rec.len() - offset);
                    if count > self.max_read {
                        return (0xCA, vec![]);
                    }
                    let next = records
                        .get(at + 1)
                        .map_or(0xFFFF, |n| u16::from_le_bytes([n[0], n[1]]));
                    let mut out = next.to_le_bytes().to_vec();
                    out.extend_from_slice(&rec[offset..offset + count]);
                    (0, out)
                }
                (NETFN_SENSOR, CMD_GET_SENSOR_READING) if d[0] == 3 => (CC_NOT_PRESENT, vec![]),
                (NETFN_SENSOR, CMD_GET_SENSOR_READING) => (0, vec![d[0], 0x40, 0x00]),
                _ => (0xC1, vec![]),
            }
        }
    }

    impl Queries for Fake {
        async fn batch(
            &self,
            _what: &'static str,
            reqs: &[Request],
        ) -> Result<Vec<(u8, Vec<u8>)>, IpmiError> {
            Ok(reqs.iter().map(|r| self.answer(r)).collect())
        }

        fn window(&self) -> usize {
            self.window
        }
    }

    fn names(cache: &SdrCache) -> Vec<&str> {
        cache.sensors().iter().map(|s| s.name.as_str()).collect()
    }

    fn oem_data(cache: &SdrCache) -> Vec<Vec<u8>> {
        use ipmi_rs_core::storage::sdr::record::RecordContents;
        cache
            .records()
            .iter()
            .filter_map(|r| match &r.contents {
                RecordContents::Unknown { ty: 0xC0, data } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    const FOREVER: Duration = Duration::from_secs(3600);

    #[test]
    fn reads_never_put_an_offset_past_255() {
        for total in [5usize, 56, 255, 256, 259, 260] {
            for chunk in MIN_CHUNK..=FIRST_CHUNK {
                for have in [0, 5, 33, 254, 255].into_iter().filter(|&h| h <= total) {
                    let mut filled = vec![false; total];
                    filled[..have].iter_mut().for_each(|f| *f = true);
                    let reads = plan_reads(&filled, chunk);
                    for &(offset, count) in &reads {
                        assert!(count <= chunk && count > 0, "{total} {chunk} {have}");
                        let (o, c) = (usize::from(offset), usize::from(count));
                        filled[o..o + c].iter_mut().for_each(|f| *f = true);
                    }
                    assert!(
                        filled.iter().all(|&f| f),
                        "{total} {chunk} {have}: {reads:?}"
                    );
                }
            }
        }
        let all = vec![false; 260];
        let reads = plan_reads(&all, 16);
        assert_eq!(reads.len(), 17);
        assert_eq!(reads[15], (240, 16));
        // Byte 256 would need offset 256: the last read starts at 255 instead.
        assert_eq!(reads[16], (255, 5));
        assert_eq!(plan_reads(&all, 0xFE), [(0, 0xFE), (0xFE, 6)]);
    }

    #[test]
    fn a_record_of_260_bytes_is_read_whole_between_sensors() {
        let fake = Fake::new(
            vec![
                sensor_record(1, 1, "CPU Temp"),
                oem_record(2),
                sensor_record(3, 2, "FAN 1"),
            ],
            16,
        );
        let mut cache = SdrCache::new();
        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Read
        );
        assert_eq!(names(&cache), ["CPU Temp", "FAN 1"]);
        assert_eq!(oem_data(&cache), [oem_record(2)[5..].to_vec()]);
        assert_eq!(cache.chunk(), 15, "254 halved until the BMC took it");
        assert!(fake
            .reads
            .borrow()
            .iter()
            .all(|&(_, o, c)| o as usize + c as usize <= 260));
    }

    #[test]
    fn an_unchanged_repository_is_not_read_again_and_a_changed_one_is() {
        let fake = Fake::new(
            (1..=20)
                .map(|i| sensor_record(i, i as u8, &format!("T{i}")))
                .collect(),
            33,
        );
        let mut cache = SdrCache::new();
        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Read
        );
        assert_eq!(cache.sensors().len(), 20);
        let reads = fake.count(CMD_GET_SDR);
        assert_eq!(reads as u64, cache.get_sdr_requests());
        // 20 records of 52 bytes, 33 a read: about two reads a record (and a few guesses and
        // the learning of the chunk size), in a handful of batches.
        assert!(reads <= 2 * 20 + 4 + 4, "{reads}");

        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Cached
        );
        assert_eq!(fake.count(CMD_GET_SDR), reads, "no Get SDR");
        assert_eq!(fake.count(CMD_GET_SDR_REPOSITORY_INFO), 2);

        fake.add(sensor_record(21, 21, "T21"));
        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Read
        );
        assert_eq!(cache.sensors().len(), 21);
        assert_eq!(cache.sensors()[20].name, "T21");
        assert_eq!(cache.chunk(), 31, "the chunk size learned is kept");
    }

    #[test]
    fn a_read_cut_short_by_its_budget_goes_on_from_where_it_stopped() {
        let records: Vec<Vec<u8>> = (1..=30)
            .map(|i| sensor_record(i, i as u8, &format!("T{i}")))
            .collect();
        let whole = {
            let fake = Fake::new(records.clone(), 33);
            let mut cache = SdrCache::new();
            block_on(cache.refresh(&fake, FOREVER)).unwrap();
            fake.count(CMD_GET_SDR)
        };
        // A zero budget: one batch of reads per refresh.
        let fake = Fake::new(records, 33);
        let mut cache = SdrCache::new();
        let mut calls = 0;
        let mut seen = 0;
        loop {
            calls += 1;
            let r = block_on(cache.refresh(&fake, Duration::ZERO)).unwrap();
            assert!(cache.sensors().len() >= seen, "what was read is kept");
            seen = cache.sensors().len();
            if r == Refresh::Read {
                break;
            }
            assert_eq!(r, Refresh::Partial);
            assert!(!cache.is_complete());
        }
        assert!(calls > 5, "{calls}");
        assert_eq!(seen, 30);
        assert_eq!(fake.count(CMD_GET_SDR), whole, "nothing read twice");
        assert_eq!(
            block_on(cache.refresh(&fake, Duration::ZERO)).unwrap(),
            Refresh::Cached
        );
    }

    #[test]
    fn a_repository_changing_between_partial_reads_is_read_from_the_start() {
        let fake = Fake::new(
            (1..=30)
                .map(|i| sensor_record(i, i as u8, &format!("T{i}")))
                .collect(),
            33,
        );
        let mut cache = SdrCache::new();
        assert_eq!(
            block_on(cache.refresh(&fake, Duration::ZERO)).unwrap(),
            Refresh::Partial
        );
        block_on(cache.refresh(&fake, Duration::ZERO)).unwrap();
        fake.records.borrow_mut()[0] = sensor_record(1, 1, "Renamed");
        fake.added.set(fake.added.get() + 1);
        while block_on(cache.refresh(&fake, Duration::ZERO)).unwrap() != Refresh::Read {}
        assert_eq!(cache.sensors().len(), 30);
        assert_eq!(cache.sensors()[0].name, "Renamed");
    }

    #[test]
    fn a_reservation_taken_by_another_tool_is_renewed_without_starting_over() {
        let records: Vec<Vec<u8>> = (1..=12)
            .map(|i| sensor_record(i, i as u8, &format!("T{i}")))
            .collect();
        let whole = {
            let fake = Fake::new(records.clone(), 33);
            let mut cache = SdrCache::new();
            block_on(cache.refresh(&fake, FOREVER)).unwrap();
            fake.count(CMD_GET_SDR)
        };
        let fake = Fake::new(records, 33);
        fake.cancel_after.set(Some(12));
        let mut cache = SdrCache::new();
        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Read
        );
        assert_eq!(cache.sensors().len(), 12);
        assert_eq!(fake.count(CMD_RESERVE_SDR_REPOSITORY), 2);
        assert_eq!(fake.count(CMD_GET_SDR_REPOSITORY_INFO), 2, "checked again");
        // What was read before the cancellation is not read again: only the refused reads
        // of one batch go again.
        let reads = fake.count(CMD_GET_SDR);
        assert!(
            reads > whole && reads <= whole + 2 * 4,
            "{reads} vs {whole}"
        );
    }

    #[test]
    fn record_ids_that_do_not_run_consecutively_stop_the_guessing() {
        let fake = Fake::new(
            (1..=25)
                .map(|i| sensor_record(i * 10, i as u8, &format!("T{i}")))
                .collect(),
            0xFF,
        );
        let mut cache = SdrCache::new();
        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Read
        );
        assert_eq!(cache.sensors().len(), 25);
        assert_eq!(cache.sensors()[24].name, "T25");
        // One read a record, and the few guesses it takes to see they miss.
        let reads = fake.count(CMD_GET_SDR);
        assert!(reads <= 25 + 2 * 4 + 4, "{reads}");
    }

    #[test]
    fn an_empty_repository_and_a_looping_chain_end() {
        let fake = Fake::new(vec![], 33);
        let mut cache = SdrCache::new();
        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Read
        );
        assert!(cache.sensors().is_empty() && cache.is_complete());

        // Record 2 names record 1 as its next.
        let fake = Fake::new(
            vec![
                sensor_record(1, 1, "A"),
                sensor_record(2, 2, "B"),
                sensor_record(1, 1, "A"),
            ],
            0xFF,
        );
        let mut cache = SdrCache::new();
        assert_eq!(
            block_on(cache.refresh(&fake, FOREVER)).unwrap(),
            Refresh::Read
        );
        assert_eq!(names(&cache), ["A", "B"]);
    }

    #[test]
    fn sensors_are_read_in_one_batch() {
        let fake = Fake::new(
            (1..=5)
                .map(|i| sensor_record(i, i as u8, &format!("T{i}")))
                .collect(),
            33,
        );
        let mut cache = SdrCache::new();
        block_on(cache.refresh(&fake, FOREVER)).unwrap();
        let readings = block_on(read_sensors(&fake, cache.sensors())).unwrap();
        let values: Vec<(Option<f64>, &str)> =
            readings.iter().map(|r| (r.value, r.state)).collect();
        assert_eq!(
            values,
            [
                (Some(1.0), "ok"),
                (Some(2.0), "ok"),
                (None, "unavailable"),
                (Some(4.0), "ok"),
                (Some(5.0), "ok")
            ]
        );
        assert_eq!(fake.count(CMD_GET_SENSOR_READING), 5);
    }

    /// A compact sensor record (IPMI 2.0 table 43-2): power supply `name`, sensor-specific
    /// states, sensor number 3, with the record-sharing byte 24 given.
    fn compact_record(name: &str, sharing: u8, modifier_offset: u8) -> Vec<u8> {
        let mut r = vec![0x05, 0x00, 0x51, 0x02, 0x00];
        r.extend([0x20, 0x00, 0x03, 0x0A, 0x01, 0x67, 0x40, 0x08, 0x6F]);
        r.extend([0x0F, 0x00, 0x0F, 0x00, 0x0F, 0x00, 0x00, 0x00, 0x00]);
        r.extend([sharing, modifier_offset, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
        r.push(0xC0 | name.len() as u8);
        r.extend(name.as_bytes());
        r[4] = (r.len() - 5) as u8;
        r
    }

    fn parse_records(raws: &[Vec<u8>]) -> Vec<SensorRecord> {
        let records: Vec<Record> = raws
            .iter()
            .map(|r| Record::parse(r).expect("record"))
            .collect();
        sensor_records(&records)
    }

    #[test]
    fn a_compact_discrete_sensor_reads_as_its_worst_asserted_state() {
        let sensors = parse_records(&[compact_record("PSU 1", 0x01, 0)]);
        let psu = &sensors[0];
        assert_eq!(
            (psu.name.as_str(), psu.number, psu.record_id),
            ("PSU 1", 3, 5)
        );
        assert!(!psu.is_threshold());
        let state = |low: u8| {
            let r = reading(psu, 0, &[0x00, 0xC0, low, 0x80]).unwrap();
            assert_eq!((r.value, r.discrete, r.sensor_type), (None, true, 0x08));
            r.state
        };
        // Presence detected (offset 0) is nominal; failure (1) critical; predictive failure
        // (2) a warning; the worst one asserted wins.
        assert_eq!(state(0x01), "ok");
        assert_eq!(state(0x00), "ok");
        assert_eq!(state(0x05), "non_critical");
        assert_eq!(state(0x07), "critical");
        // Scanning disabled: unavailable, as for threshold sensors.
        assert_eq!(
            reading(psu, 0, &[0, 0x00, 0x03]).unwrap().state,
            "unavailable"
        );
        assert_eq!(reading(psu, 0xCB, &[]).unwrap().state, "unavailable");
    }

    #[test]
    fn a_shared_compact_record_stands_for_each_of_its_sensors() {
        // Three sensors, numeric modifiers from 1; then two with alphabetic ones from 'B'.
        let sensors = parse_records(&[
            compact_record("PSU", 0x03, 1),
            compact_record("FAN", 0x12, 1),
        ]);
        let got: Vec<(&str, u8)> = sensors
            .iter()
            .map(|s| (s.name.as_str(), s.number))
            .collect();
        assert_eq!(
            got,
            [
                ("PSU1", 3),
                ("PSU2", 4),
                ("PSU3", 5),
                ("FANB", 3),
                ("FANC", 4)
            ]
        );
        assert_eq!(alpha(27), "BB");
    }

    #[test]
    fn records_ipmi_rs_core_would_panic_on_are_skipped() {
        // ipmi-rs-core 0.6 panics on modifier types 2 and 3: such records never reach it.
        for bits in [0x20, 0x30] {
            assert!(!parsable(&compact_record("X", bits | 1, 0)));
        }
        assert!(parsable(&compact_record("X", 0x11, 0)));
        assert!(parsable(&CPU_TEMP));
        // Short records of every type, with any bytes: what is parsable parses without a
        // panic (full records of 15-17 and 42 bytes, FRU locators of 8-10 panicked).
        let mut rng = fastrand::Rng::with_seed(16);
        for ty in [0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0xC0] {
            for len in 0..64u8 {
                for _ in 0..64 {
                    let mut raw = vec![0x01, 0x00, 0x51, ty, len];
                    raw.extend((0..len).map(|_| rng.u8(..)));
                    if parsable(&raw) {
                        let _ = Record::parse(&raw);
                    }
                }
            }
        }
        let mut short = CPU_TEMP[..20].to_vec();
        short[4] = 15;
        assert!(!parsable(&short));
        // Through the cache: the bad record goes, the sensors around it stay.
        let mut bad = compact_record("X", 0x21, 0);
        bad[0] = 2;
        let fake = Fake::new(
            vec![sensor_record(1, 1, "T1"), bad, sensor_record(3, 3, "T3")],
            64,
        );
        let mut cache = SdrCache::new();
        block_on(cache.refresh(&fake, FOREVER)).unwrap();
        assert_eq!(names(&cache), ["T1", "T3"]);
    }

    #[test]
    fn repository_info_parses() {
        let d = [
            0x51, 0x02, 0x00, 0xfe, 0xff, 0xcd, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        ];
        let info = RepositoryInfo::parse(&d).unwrap();
        assert_eq!(
            info,
            RepositoryInfo {
                version: 0x51,
                record_count: 2,
                free_space: 0xFFFE,
                last_addition: Timestamp(0x3CD),
                last_erase: Timestamp(0),
                operations: 0x02,
            }
        );
        assert!(RepositoryInfo::parse(&d[..13]).is_err());
        let mut freer = info;
        freer.free_space = 10;
        assert!(info.same_records(&freer));
        let mut added = info;
        added.last_addition = Timestamp(0x3CE);
        assert!(!info.same_records(&added));
    }
}
