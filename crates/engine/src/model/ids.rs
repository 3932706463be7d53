//! Checked newtypes for Redis Cluster identifiers: node ids, slots, slot ranges and addresses.
//! Pure data, no network.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// A Redis Cluster node id: 40 lower-case hex characters (`CLUSTER MYID`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Parses and checks a node id.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        if s.len() == 40
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(NodeId(s.to_owned()))
        } else {
            Err(ModelError::NodeId(s.to_owned()))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters, for logs and messages.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl TryFrom<String> for NodeId {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::parse(&s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl FromStr for NodeId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::parse(s)
    }
}

/// A hash slot, `0..16384`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Slot(u16);

impl Slot {
    /// Slot 0.
    pub const MIN: Slot = Slot(0);

    /// Checks a slot number.
    pub fn new(n: u16) -> Result<Self, ModelError> {
        if n < SLOT_COUNT {
            Ok(Slot(n))
        } else {
            Err(ModelError::Slot(n.to_string()))
        }
    }

    /// The slot number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Every slot, in order.
    pub fn all() -> impl Iterator<Item = Slot> {
        (0..SLOT_COUNT).map(Slot)
    }

    /// The slot of a key, as Redis Cluster computes it (CRC16 of the hash tag or the key).
    pub fn for_key(key: &[u8]) -> Slot {
        let tagged = hash_tag(key);
        Slot(crc16_xmodem(tagged) % SLOT_COUNT)
    }
}

impl TryFrom<u16> for Slot {
    type Error = ModelError;
    fn try_from(n: u16) -> Result<Self, Self::Error> {
        Slot::new(n)
    }
}

impl From<Slot> for u16 {
    fn from(s: Slot) -> u16 {
        s.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Slot {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u16 = s.parse().map_err(|_| ModelError::Slot(s.to_owned()))?;
        Slot::new(n)
    }
}

/// The part of a key that is hashed: the first non-empty `{...}` tag, or the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16/XMODEM, the checksum Redis Cluster uses for key slots.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// An inclusive range of slots, `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "[u16; 2]", into = "[u16; 2]")]
pub struct SlotRange {
    start: Slot,
    end: Slot,
}

impl SlotRange {
    /// A range `start..=end`; `start <= end` is checked.
    pub fn new(start: Slot, end: Slot) -> Result<Self, ModelError> {
        if start <= end {
            Ok(SlotRange { start, end })
        } else {
            Err(ModelError::Slot(format!("{start}-{end}")))
        }
    }

    /// A range of one slot.
    pub fn single(slot: Slot) -> Self {
        SlotRange {
            start: slot,
            end: slot,
        }
    }

    /// First slot.
    pub fn start(&self) -> Slot {
        self.start
    }

    /// Last slot (inclusive).
    pub fn end(&self) -> Slot {
        self.end
    }

    /// Number of slots in the range.
    pub fn len(&self) -> usize {
        usize::from(self.end.0 - self.start.0) + 1
    }

    /// A range is never empty; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slots of the range.
    pub fn slots(&self) -> impl Iterator<Item = Slot> {
        (self.start.0..=self.end.0).map(Slot)
    }
}

impl TryFrom<[u16; 2]> for SlotRange {
    type Error = ModelError;
    fn try_from(r: [u16; 2]) -> Result<Self, Self::Error> {
        SlotRange::new(Slot::new(r[0])?, Slot::new(r[1])?)
    }
}

impl From<SlotRange> for [u16; 2] {
    fn from(r: SlotRange) -> [u16; 2] {
        [r.start.0, r.end.0]
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for SlotRange {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('-') {
            Some((a, b)) => SlotRange::new(a.parse()?, b.parse()?),
            None => {
                let slot: Slot = s.parse()?;
                Ok(SlotRange {
                    start: slot,
                    end: slot,
                })
            }
        }
    }
}

/// The network address of a Redis node: where clients connect, and its cluster bus port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeAddr {
    /// IP address or host name.
    pub host: String,
    /// Client port.
    pub port: u16,
}

impl NodeAddr {
    /// An address from host and port.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        NodeAddr {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for NodeAddr {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| ModelError::Addr(s.to_owned()))?;
        let port: u16 = port.parse().map_err(|_| ModelError::Addr(s.to_owned()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(ModelError::Addr(s.to_owned()));
        }
        Ok(NodeAddr::new(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        assert_eq!(Slot::for_key(b"foo").get(), 12182);
        assert_eq!(Slot::for_key(b"bar").get(), 5061);
        assert_eq!(
            Slot::for_key(b"{user1000}.following").get(),
            Slot::for_key(b"user1000").get()
        );
        assert_eq!(Slot::for_key(b"foo{}{bar}"), Slot::for_key(b"foo{}{bar}"));
        assert_eq!(Slot::for_key(b"123456789").get(), 0x31C3 % SLOT_COUNT);
    }

    #[test]
    fn ids_are_checked() {
        assert!(NodeId::parse("07c37dfeb235213a872192d90877d0cd55635b91").is_ok());
        assert!(NodeId::parse("07c37dfeb235213a872192d90877d0cd55635b9").is_err());
        assert!(NodeId::parse("07C37DFEB235213A872192D90877D0CD55635B91").is_err());
        assert!(Slot::new(16384).is_err());
        assert!("5-3".parse::<SlotRange>().is_err());
        assert_eq!(
            "0-5460".parse::<SlotRange>().map(|r| r.len()).ok(),
            Some(5461)
        );
        assert_eq!(
            "127.0.0.1:7000".parse::<NodeAddr>().ok(),
            Some(NodeAddr::new("127.0.0.1", 7000))
        );
        assert!(":0".parse::<NodeAddr>().is_err());
    }
}
