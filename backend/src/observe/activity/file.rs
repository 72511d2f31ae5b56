//! One file per day in `<data_dir>/activity/`: `day-<days since epoch>.bin`, written whole
//! (temporary file, fsync, rename, directory fsync), so a crash leaves the old or the new one.
//! Layout: magic, version, day, messages, registrations, logins (little-endian), the sketch's
//! registers, CRC32C of everything before it. A damaged file is skipped with a warning: these
//! are statistics, never a reason to refuse to start.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Arc;

use super::Day;
use super::hll::{Hll, REGISTERS};

const MAGIC: &[u8; 4] = b"RCAD";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 4 + 1 + 4 + 8 * 3;
const FILE_BYTES: usize = HEADER_BYTES + REGISTERS + 4;

fn name(day: u32) -> String {
    format!("day-{day}.bin")
}

fn day_of_name(name: &str) -> Option<u32> {
    name.strip_prefix("day-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

pub fn encode(day: &Day) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_BYTES);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&day.day.to_le_bytes());
    for n in [day.messages, day.registrations, day.logins] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(day.users.as_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Option<Day> {
    if bytes.len() != FILE_BYTES || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    let (body, crc) = bytes.split_at(FILE_BYTES - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    Some(Day {
        day: u32::from_le_bytes(body[5..9].try_into().expect("4 bytes")),
        messages: u64_at(9),
        registrations: u64_at(17),
        logins: u64_at(25),
        users: Arc::new(Hll::from_bytes(&body[HEADER_BYTES..])?),
    })
}

/// The newest `kept` days found in `dir` (created if missing).
pub fn load(dir: &Path, kept: usize) -> io::Result<Vec<Day>> {
    fs::create_dir_all(dir)?;
    let mut days = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(day) = file_name.to_str().and_then(day_of_name) else {
            continue;
        };
        match fs::read(entry.path()).ok().as_deref().and_then(decode) {
            Some(d) if d.day == day => days.push(d),
            _ => {
                tracing::warn!(file = %entry.path().display(), "activity file unreadable; skipped")
            }
        }
    }
    days.sort_by_key(|d| d.day);
    let drop = days.len().saturating_sub(kept);
    days.drain(..drop);
    Ok(days)
}

pub fn write(dir: &Path, day: &Day) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let path = dir.join(name(day.day));
    let tmp = dir.join(format!("{}.tmp", name(day.day)));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&encode(day))?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()
}

/// Removes the files of days before `oldest`.
pub fn remove_before(dir: &Path, oldest: u32) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(day) = entry.file_name().to_str().and_then(day_of_name)
            && day < oldest
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_round_trips_and_damage_is_refused() {
        let mut day = Day {
            day: 20_000,
            messages: 5,
            registrations: 2,
            logins: 9,
            users: Arc::default(),
        };
        Arc::make_mut(&mut day.users).insert(42);
        let bytes = encode(&day);
        let back = decode(&bytes).unwrap();
        assert_eq!(
            (back.day, back.messages, back.registrations, back.logins),
            (20_000, 5, 2, 9)
        );
        assert_eq!(back.users, day.users);
        let mut bad = bytes.clone();
        bad[HEADER_BYTES + 7] ^= 1;
        assert!(decode(&bad).is_none());
        assert!(decode(&bytes[..100]).is_none());
    }
}
