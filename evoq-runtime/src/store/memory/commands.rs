//! The in-memory store's command log.
//!
//! Two kinds of entries, to keep the common case cheap:
//! - a **checked** command (one that may be a resend: it has a key, or its caller chose its id)
//!   gets a whole entry, kept in the order it was recorded, and found through exact indexes by
//!   id and by key;
//! - a **marked** command (a fresh UUID v7 the runtime generated, recorded without a check) that
//!   appended events gets no entry of its own: its events are its entry. Under the events' lock
//!   the store marks them in [`Marks`], beside the global log: 4 bytes per event (whether it
//!   starts a marked command's events; at the last one the static names of its command and
//!   aggregate and 16 bits of its id), and per block of [`BLOCK`] positions the range of the
//!   milliseconds in the ids of the marked commands that end there. The rest of its entry (id,
//!   stream, version, commit time) is read off its last event, whose metadata carries its id.
//!
//! `find_command` by id finds a marked command from the millisecond in its id: it scans only
//! the blocks whose range holds that millisecond, and reads only the last events whose 16 bits
//! match. The ranges are exact, so no bound is assumed on the time between an id and its
//! commit: an id made long before its dispatch, or ahead of the clock (ids of one thread keep
//! increasing when the system clock steps back), only widens its block's range, and so makes
//! lookups of ids of that time scan one more block. Made and committed at once, as the runtime
//! does, the ids of one block span a few milliseconds, and a lookup scans the one or two blocks
//! committed around its id's time. The sweep walks the marks in log order behind a watermark.
//!
//! A fresh command that does not fit (names built at run time, an id that is not a UUID v7, a
//! last event without its id, more than 32,767 pairs of names) is kept whole, as a checked one.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use uuid::Uuid;

use super::log::{LOG_CHUNK, Log};
use crate::envelope::NewEvent;
use crate::store::command_log::{aggregate_id_in, last_position};
use crate::store::{Appended, CommandLookup, CommandRecord, NewCommand};
use crate::util::hash::StreamHasher;

/// The command log's whole entries. See the [module docs](self).
///
/// Lock order: the store's events lock, then `checked`.
#[derive(Default)]
pub(super) struct CommandLog {
    /// The whole entries, and the sweeps' progress.
    checked: Mutex<Checked>,
}

/// The whole entries in the order they were recorded, and where the sweeps got to.
#[derive(Default)]
pub(super) struct Checked {
    /// `entries[i]` has sequence number `swept + i`; `None` once removed ahead of a sweep (an
    /// expired entry replaced by a new run of its command).
    entries: VecDeque<Option<Logged>>,
    /// How many entries the sweeps popped off the front.
    swept: u64,
    /// The whole entries by command id.
    by_id: HashMap<Uuid, u64, StreamHasher>,
    /// The whole entries with a key, by key.
    by_key: HashMap<Box<str>, u64, StreamHasher>,
    /// The marked commands whose last event is at or before this position are swept.
    swept_position: u64,
}

/// A whole entry, compact: the aggregate id is the end of the stream id, the stream id is
/// shared with the stream's events.
pub(super) struct Logged {
    command_id: Uuid,
    key: Option<Box<str>>,
    command: Cow<'static, str>,
    aggregate: Cow<'static, str>,
    stream: Arc<str>,
    version: u64,
    count: u64,
    first_position: u64,
    recorded_at: SystemTime,
}

impl Logged {
    /// The entry `command` leaves once appended to `stream`.
    pub(super) fn new(
        command: NewCommand,
        stream: Arc<str>,
        appended: &Appended,
        count: u64,
        recorded_at: SystemTime,
    ) -> Self {
        Logged {
            command_id: command.command_id,
            key: command.idempotency_key.map(String::into_boxed_str),
            command: command.command,
            aggregate: command.aggregate,
            stream,
            version: appended.version,
            count,
            first_position: appended.first_position,
            recorded_at,
        }
    }

    fn record(&self) -> CommandRecord {
        CommandRecord {
            command_id: self.command_id,
            idempotency_key: self.key.as_deref().map(str::to_owned),
            command: self.command.to_string(),
            aggregate: self.aggregate.to_string(),
            aggregate_id: aggregate_id_in(&self.aggregate, &self.stream).to_owned(),
            stream_id: self.stream.to_string(),
            version: self.version,
            event_count: self.count,
            first_position: self.first_position,
            last_position: last_position(self.first_position, self.count),
            recorded_at: self.recorded_at,
        }
    }
}

/// Where the entry a lookup finds is.
#[derive(Clone, Copy)]
enum Found {
    /// A whole entry: its sequence number.
    Whole(u64),
    /// A marked command: see [`Mark`].
    Marked(Mark),
}

impl CommandLog {
    /// The whole entries, locked: a checked append holds them from its check to its entry.
    pub(super) fn checked(&self) -> MutexGuard<'_, Checked> {
        self.checked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a fresh command that could not be marked, whole. Called without the events'
    /// lock: nobody can look its fresh id up before its dispatch returns.
    pub(super) fn record_whole(
        &self,
        command: NewCommand,
        stream: Arc<str>,
        appended: &Appended,
        count: u64,
        recorded_at: SystemTime,
    ) {
        self.checked()
            .push(Logged::new(command, stream, appended, count, recorded_at));
    }

    /// The entry `lookup` finds, recorded at or after `since`.
    pub(super) fn find(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
        log: &Log,
        marks: &Marks,
    ) -> Option<CommandRecord> {
        let checked = self.checked();
        let found = checked.found(lookup, log, marks)?;
        let record = checked.record(found, log, marks)?;
        (record.recorded_at >= since).then_some(record)
    }

    /// Removes at most `limit` entries recorded before `before`: whole ones oldest first, then
    /// marked ones in the order of their events.
    pub(super) fn sweep(
        &self,
        before: SystemTime,
        limit: usize,
        log: &Log,
        marks: &Marks,
    ) -> usize {
        self.checked().sweep(before, limit, log, marks)
    }
}

impl Checked {
    fn logged(&self, sequence: u64) -> Option<&Logged> {
        let index = usize::try_from(sequence.checked_sub(self.swept)?).ok()?;
        self.entries.get(index)?.as_ref()
    }

    /// Where the entry `lookup` names is. Several entries may share an id (a caller of the
    /// store may reuse one): the newest answers. A marked command is newer than the whole entry
    /// of its id when its events come after the whole entry's (or, for a whole entry without
    /// events, when it was committed no earlier).
    fn found(&self, lookup: CommandLookup<'_>, log: &Log, marks: &Marks) -> Option<Found> {
        let id = match lookup {
            CommandLookup::Key(key) => return self.by_key.get(key).copied().map(Found::Whole),
            CommandLookup::Id(id) => id,
        };
        let whole = self.by_id.get(&id).copied();
        let logged = whole.and_then(|sequence| self.logged(sequence));
        let after = logged
            .map_or(0, |l| last_position(l.first_position, l.count))
            .max(self.swept_position);
        let marked = marks.find(id, log, after).filter(|mark| match logged {
            Some(logged) if logged.count == 0 => log
                .at(mark.last)
                .is_some_and(|event| event.recorded_at >= logged.recorded_at),
            _ => true,
        });
        marked.map(Found::Marked).or(whole.map(Found::Whole))
    }

    /// The entry at `found`, read off `log` for a marked one.
    fn record(&self, found: Found, log: &Log, marks: &Marks) -> Option<CommandRecord> {
        match found {
            Found::Whole(sequence) => self.logged(sequence).map(Logged::record),
            Found::Marked(mark) => {
                let event = log.at(mark.last)?;
                let (command, aggregate) = marks.names(mark.names);
                let stream = event.stream_id();
                Some(CommandRecord {
                    command_id: event.metadata.command_id?,
                    idempotency_key: None,
                    command: command.to_owned(),
                    aggregate: aggregate.to_owned(),
                    aggregate_id: aggregate_id_in(aggregate, stream).to_owned(),
                    stream_id: stream.to_owned(),
                    version: event.stream_version,
                    event_count: mark.last + 1 - mark.first,
                    first_position: mark.first,
                    last_position: mark.last,
                    recorded_at: event.recorded_at,
                })
            }
        }
    }

    /// The entry a checked append of `command` finds; an expired one is removed.
    pub(super) fn duplicate(
        &mut self,
        command: &NewCommand,
        log: &Log,
        marks: &mut Marks,
    ) -> Option<CommandRecord> {
        let since = command.deduplicate_since?;
        let found = self.found(command.lookup(), log, marks)?;
        let record = self.record(found, log, marks)?;
        if record.recorded_at >= since {
            return Some(record);
        }
        match found {
            Found::Whole(sequence) => self.remove(sequence),
            Found::Marked(mark) => marks.unmark(mark.last),
        }
        None
    }

    /// Records a whole entry.
    pub(super) fn push(&mut self, logged: Logged) {
        let sequence = self.swept + self.entries.len() as u64;
        self.by_id.insert(logged.command_id, sequence);
        if let Some(key) = &logged.key {
            self.by_key.insert(key.clone(), sequence);
        }
        self.entries.push_back(Some(logged));
    }

    /// Removes whole entry `sequence` and its index entries (those that still point at it).
    fn remove(&mut self, sequence: u64) {
        let Some(index) = sequence
            .checked_sub(self.swept)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(logged) = self.entries.get_mut(index).and_then(Option::take) else {
            return;
        };
        if self.by_id.get(&logged.command_id) == Some(&sequence) {
            self.by_id.remove(&logged.command_id);
        }
        if let Some(key) = &logged.key
            && self.by_key.get(key) == Some(&sequence)
        {
            self.by_key.remove(key);
        }
    }

    fn sweep(&mut self, before: SystemTime, limit: usize, log: &Log, marks: &Marks) -> usize {
        let mut removed = 0;
        while removed < limit {
            match self.entries.front() {
                Some(Some(logged)) if logged.recorded_at < before => {
                    self.remove(self.swept);
                    removed += 1;
                }
                // Removed earlier (already counted then): just drop the slot.
                Some(None) => {}
                _ => break,
            }
            self.entries.pop_front();
            self.swept += 1;
        }
        if removed < limit {
            removed += marks.sweep(&mut self.swept_position, before, limit - removed, log);
        }
        removed
    }
}

/// Positions per block of [`Marks`]' time ranges.
pub(super) const BLOCK: usize = 256;

/// How many pairs of names [`Marks::intern`] compares before it hashes.
const NAMES_SCANNED: usize = 8;

/// Blocks per chunk of the log.
const BLOCKS: usize = LOG_CHUNK / BLOCK;

/// The mark of an event that starts a marked command's events.
const START: u32 = 1 << 31;

/// The bits of the mark of a marked command's last event that name its command and aggregate:
/// the index of the pair in [`Marks::names`], plus one (0: not a last event).
const NAMES: u32 = 0x7fff << NAMES_SHIFT;

/// Where [`NAMES`] start.
const NAMES_SHIFT: u32 = 16;

/// The bits of the mark of a marked command's last event that hold 16 bits of its id (see
/// [`fingerprint`]): a lookup reads only the events whose fingerprint matches.
const FINGERPRINT: u32 = 0xffff;

/// How many pairs of names there can be.
const MAX_NAMES: usize = 0x7fff;

/// The marks of the commands recorded without an entry of their own, beside the global log.
/// See the [module docs](self). Written under the events' write lock, read under their read
/// lock.
#[derive(Default)]
pub(super) struct Marks {
    /// One per chunk of the log, up to the chunk of the last marked event.
    chunks: Vec<MarkChunk>,
    /// The pairs of names (command, aggregate) of marked commands.
    names: Vec<(&'static str, &'static str)>,
    /// The index of each pair in `names`, by the addresses and lengths of its two names.
    by_names: hashbrown::HashMap<[usize; 4], u32, StreamHasher>,
}

/// The marks of one chunk of the log.
///
/// Commits from several threads write here one after the other, so a commit touches as few
/// cache lines as it can: the marks are a fixed array (no length to update) and a range is
/// written only when it widens (about once per millisecond per block).
struct MarkChunk {
    /// The mark of the event at index `i` of the chunk ([`LOG_CHUNK`] of them, 0 when
    /// unmarked).
    marks: Box<[u32]>,
    /// The milliseconds of the ids of the marked commands whose last event is in the chunk.
    span: Span,
    /// The same per block of [`BLOCK`] positions.
    blocks: [Span; BLOCKS],
}

/// A range of milliseconds (empty when `min > max`).
#[derive(Clone, Copy)]
struct Span {
    min: u64,
    max: u64,
}

impl Span {
    const EMPTY: Span = Span {
        min: u64::MAX,
        max: 0,
    };

    fn contains(self, millis: u64) -> bool {
        self.min <= millis && millis <= self.max
    }

    /// Widens the range to `millis`, writing only when it changes.
    #[inline]
    fn add(&mut self, millis: u64) {
        if millis < self.min {
            self.min = millis;
        }
        if millis > self.max {
            self.max = millis;
        }
    }
}

/// A marked command, as [`Marks::find`] finds it.
#[derive(Clone, Copy)]
struct Mark {
    /// The positions of its first and last event.
    first: u64,
    last: u64,
    /// Its names' index in [`Marks::names`].
    names: usize,
}

/// The millisecond in `id` when it is a UUID v7.
fn v7_millis(id: Uuid) -> Option<u64> {
    (id.get_version_num() == 7).then(|| id.as_u64_pair().0 >> 16)
}

/// 16 bits of `id`: its low 64 bits (random in a UUID v7) folded.
fn fingerprint(id: Uuid) -> u32 {
    let low = id.as_u64_pair().1;
    let folded = low ^ (low >> 32);
    ((folded ^ (folded >> 16)) & u64::from(FINGERPRINT)) as u32
}

/// What marks a fresh command's events: the static names of its command and aggregate, the
/// millisecond in its id and the id's [`fingerprint`].
#[derive(Clone, Copy)]
pub(super) struct Fresh {
    command: &'static str,
    aggregate: &'static str,
    millis: u64,
    fingerprint: u32,
}

impl Fresh {
    /// The marks of `command` (appended with `last` as its last event) when it can have no
    /// entry of its own: it is not checked, its names are static, its id is a UUID v7 and its
    /// last event names it.
    pub(super) fn of(command: &NewCommand, last: Option<&NewEvent>) -> Option<Fresh> {
        if command.deduplicate_since.is_some()
            || last?.metadata.command_id != Some(command.command_id)
        {
            return None;
        }
        match (&command.command, &command.aggregate) {
            (&Cow::Borrowed(name), &Cow::Borrowed(aggregate)) => Some(Fresh {
                command: name,
                aggregate,
                millis: v7_millis(command.command_id)?,
                fingerprint: fingerprint(command.command_id),
            }),
            _ => None,
        }
    }
}

/// The chunk and the index in it of global position `position` (at least 1).
fn split(position: u64) -> (usize, usize) {
    let index = (position - 1) as usize;
    (index / LOG_CHUNK, index % LOG_CHUNK)
}

impl Marks {
    /// Marks the events at positions `first..=last` as those of the command `fresh`
    /// describes. `false` (nothing marked) when there are already 32,767 pairs of names: the
    /// command is kept whole then.
    pub(super) fn mark(&mut self, first: u64, last: u64, fresh: Fresh) -> bool {
        let Some(names) = self.intern(fresh.command, fresh.aggregate) else {
            return false;
        };
        if first != last {
            *self.mark_at(first) |= START;
        }
        let (chunk, index) = split(last);
        if self.chunks.len() <= chunk {
            self.grow(chunk);
        }
        let chunk = &mut self.chunks[chunk];
        let start = if first == last { START } else { 0 };
        chunk.marks[index] |= start | ((names + 1) << NAMES_SHIFT) | fresh.fingerprint;
        chunk.span.add(fresh.millis);
        chunk.blocks[index / BLOCK].add(fresh.millis);
        true
    }

    /// The index of the pair of names in `names`, added if need be. The first pairs are
    /// compared by address (a command type's names are the same two `&'static str` every
    /// time), the rest found by hash.
    #[inline]
    fn intern(&mut self, command: &'static str, aggregate: &'static str) -> Option<u32> {
        for (index, &(c, a)) in self.names.iter().take(NAMES_SCANNED).enumerate() {
            if std::ptr::eq(c, command) && std::ptr::eq(a, aggregate) {
                return Some(index as u32);
            }
        }
        self.intern_hashed(command, aggregate)
    }

    #[cold]
    fn intern_hashed(&mut self, command: &'static str, aggregate: &'static str) -> Option<u32> {
        let key = [
            command.as_ptr() as usize,
            command.len(),
            aggregate.as_ptr() as usize,
            aggregate.len(),
        ];
        if let Some(&index) = self.by_names.get(&key) {
            return Some(index);
        }
        if self.names.len() >= MAX_NAMES {
            return None;
        }
        let index = self.names.len() as u32;
        self.names.push((command, aggregate));
        self.by_names.insert(key, index);
        Some(index)
    }

    /// The mark of the event at `position`, made room for.
    fn mark_at(&mut self, position: u64) -> &mut u32 {
        let (chunk, index) = split(position);
        if self.chunks.len() <= chunk {
            self.grow(chunk);
        }
        &mut self.chunks[chunk].marks[index]
    }

    /// Adds the chunks up to `chunk`.
    #[cold]
    fn grow(&mut self, chunk: usize) {
        while self.chunks.len() <= chunk {
            self.chunks.push(MarkChunk {
                marks: vec![0; LOG_CHUNK].into_boxed_slice(),
                span: Span::EMPTY,
                blocks: [Span::EMPTY; BLOCKS],
            });
        }
    }

    /// The mark of the event at `position` (0 when unmarked).
    fn get(&self, position: u64) -> u32 {
        let (chunk, index) = split(position);
        self.chunks
            .get(chunk)
            .and_then(|chunk| chunk.marks.get(index))
            .copied()
            .unwrap_or(0)
    }

    /// The names of pair `index`.
    fn names(&self, index: usize) -> (&'static str, &'static str) {
        self.names[index]
    }

    /// Forgets the marked command whose last event is at `last` (an expired entry replaced).
    fn unmark(&mut self, last: u64) {
        let (chunk, index) = split(last);
        if let Some(mark) = self
            .chunks
            .get_mut(chunk)
            .and_then(|chunk| chunk.marks.get_mut(index))
        {
            *mark &= START;
        }
    }

    /// The latest marked command of id `id` whose last event is after `after`: only the blocks
    /// whose range holds the id's millisecond are scanned, and in each only the last events of
    /// marked commands whose fingerprint is the id's are read.
    fn find(&self, id: Uuid, log: &Log, after: u64) -> Option<Mark> {
        let millis = v7_millis(id)?;
        let fingerprint = fingerprint(id);
        // Newest first; nothing at or before `after` counts.
        for (c, chunk) in self.chunks.iter().enumerate().rev() {
            let base = (c * LOG_CHUNK) as u64;
            if base + LOG_CHUNK as u64 <= after {
                return None;
            }
            if !chunk.span.contains(millis) {
                continue;
            }
            for (b, block) in chunk.blocks.iter().enumerate().rev() {
                if base + ((b + 1) * BLOCK) as u64 <= after {
                    return None;
                }
                if !block.contains(millis) {
                    continue;
                }
                for index in (b * BLOCK..(b + 1) * BLOCK).rev() {
                    let mark = chunk.marks[index];
                    if mark & NAMES == 0 || mark & FINGERPRINT != fingerprint {
                        continue;
                    }
                    let last = base + index as u64 + 1;
                    if last <= after {
                        return None;
                    }
                    if log.at(last)?.metadata.command_id == Some(id) {
                        return Some(Mark {
                            first: self.start_of(last),
                            last,
                            names: ((mark & NAMES) >> NAMES_SHIFT) as usize - 1,
                        });
                    }
                }
            }
        }
        None
    }

    /// The position of the first event of the marked command whose last event is at `last`.
    fn start_of(&self, last: u64) -> u64 {
        let mut position = last;
        // Its first event has the start mark, and no other event of its append has.
        while position > 1 && self.get(position) & START == 0 {
            position -= 1;
        }
        position
    }

    /// Sweeps, in log order from `*swept` on, at most `limit` marked commands committed before
    /// `before`, up to the first that was not; moves `*swept` past them. How many.
    fn sweep(&self, swept: &mut u64, before: SystemTime, limit: usize, log: &Log) -> usize {
        let end = log.len();
        let mut removed = 0;
        while removed < limit && *swept < end {
            let position = *swept + 1;
            let (c, index) = split(position);
            let Some(marks) = self.chunks.get(c).map(|chunk| &chunk.marks) else {
                // Nothing marked from here on.
                *swept = end;
                break;
            };
            if marks[index] & NAMES != 0 {
                match log.at(position) {
                    Some(event) if event.recorded_at < before => removed += 1,
                    _ => break,
                }
            }
            *swept = position;
        }
        removed
    }
}
