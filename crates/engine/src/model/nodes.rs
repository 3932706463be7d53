//! Parsing one node's `CLUSTER NODES` output into typed entries. Pure, no network.
//!
//! Format per line (Redis 7):
//! `<id> <ip:port@cport[,hostname]> <flags> <master|-> <ping-sent> <pong-recv> <config-epoch>
//! <link-state> <slot>...` where a slot token is `N`, `A-B`, `[N->-<id>]` (migrating to id) or
//! `[N-<-<id>]` (importing from id). Open-slot tokens only appear in the `myself` line and are
//! never ownership.

use serde::{Deserialize, Serialize};

use super::ids::{NodeAddr, NodeId, Slot, SlotRange};
use super::slotset::SlotSet;
use super::ModelError;

/// Node flags as printed by `CLUSTER NODES`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFlags {
    /// The line describes the node that answered.
    pub myself: bool,
    /// The node is a master.
    pub master: bool,
    /// The node is a replica.
    pub replica: bool,
    /// `fail?`: this observer cannot reach it (PFAIL); not yet agreed.
    pub pfail: bool,
    /// `fail`: a majority of masters agreed it is failing.
    pub fail: bool,
    /// First contact not yet finished (the id is random until it is).
    pub handshake: bool,
    /// No known address.
    pub noaddr: bool,
    /// The replica will never try a failover.
    pub nofailover: bool,
}

impl NodeFlags {
    fn parse(s: &str) -> Result<Self, ModelError> {
        let mut flags = NodeFlags::default();
        for flag in s.split(',') {
            match flag {
                "myself" => flags.myself = true,
                "master" => flags.master = true,
                "slave" => flags.replica = true,
                "fail?" => flags.pfail = true,
                "fail" => flags.fail = true,
                "handshake" => flags.handshake = true,
                "noaddr" => flags.noaddr = true,
                "nofailover" => flags.nofailover = true,
                "noflags" => {}
                other => return Err(ModelError::Line(format!("unknown flag {other:?}"))),
            }
        }
        Ok(flags)
    }
}

/// Role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A master (possibly without slots).
    Master,
    /// A replica of some master.
    Replica,
}

/// An open slot marker from the `myself` line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenSlot {
    /// The slot.
    pub slot: Slot,
    /// The other end: the target when migrating, the source when importing.
    pub peer: NodeId,
}

/// One line of `CLUSTER NODES`: what the observer believes about one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node id (random while in handshake).
    pub id: NodeId,
    /// Client address; `None` when the observer has no address (`:0@0`, `noaddr`).
    pub addr: Option<NodeAddr>,
    /// Cluster bus port as announced.
    pub bus_port: u16,
    /// Announced hostname, if any.
    pub hostname: Option<String>,
    /// Flags.
    pub flags: NodeFlags,
    /// The master of a replica.
    pub master: Option<NodeId>,
    /// Config epoch.
    pub config_epoch: u64,
    /// Whether the observer's bus link to this node is connected.
    pub connected: bool,
    /// Slots this observer believes the node serves.
    pub slots: SlotSet,
    /// Slots the node is migrating away (only on the `myself` line).
    pub migrating: Vec<OpenSlot>,
    /// Slots the node is importing (only on the `myself` line).
    pub importing: Vec<OpenSlot>,
}

impl NodeEntry {
    /// The role from the flags.
    pub fn role(&self) -> Role {
        if self.flags.replica {
            Role::Replica
        } else {
            Role::Master
        }
    }

    /// Whether this observer considers the node failed (`fail`, or a `noaddr` master that
    /// still holds slots: PITFALLS 8, peers never mark such an entry failed).
    pub fn is_failed(&self) -> bool {
        self.flags.fail
            || (self.flags.noaddr && self.role() == Role::Master && !self.slots.is_empty())
    }
}

/// Parses a whole `CLUSTER NODES` reply.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeEntry>, ModelError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            parse_line(line).map_err(|e| ModelError::Line(format!("{e}: in line {line:?}")))
        })
        .collect()
}

fn parse_line(line: &str) -> Result<NodeEntry, ModelError> {
    let mut fields = line.split_ascii_whitespace();
    let mut next = |what: &str| {
        fields
            .next()
            .ok_or_else(|| ModelError::Line(format!("missing {what}")))
    };
    let id = NodeId::parse(next("id")?)?;
    let (addr, bus_port, hostname) = parse_address(next("address")?)?;
    let flags = NodeFlags::parse(next("flags")?)?;
    let master = match next("master")? {
        "-" => None,
        other => Some(NodeId::parse(other)?),
    };
    let _ping_sent = next("ping-sent")?;
    let _pong_recv = next("pong-recv")?;
    let config_epoch = next("config-epoch")?
        .parse()
        .map_err(|_| ModelError::Line("bad config epoch".into()))?;
    let connected = match next("link-state")? {
        "connected" => true,
        "disconnected" => false,
        other => return Err(ModelError::Line(format!("bad link state {other:?}"))),
    };
    let mut entry = NodeEntry {
        id,
        addr: if flags.noaddr { None } else { addr },
        bus_port,
        hostname,
        flags,
        master,
        config_epoch,
        connected,
        slots: SlotSet::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for token in fields {
        if let Some(inner) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if let Some((slot, peer)) = inner.split_once("->-") {
                entry.migrating.push(OpenSlot {
                    slot: slot.parse()?,
                    peer: NodeId::parse(peer)?,
                });
            } else if let Some((slot, peer)) = inner.split_once("-<-") {
                entry.importing.push(OpenSlot {
                    slot: slot.parse()?,
                    peer: NodeId::parse(peer)?,
                });
            } else {
                return Err(ModelError::Line(format!("bad open slot token {token:?}")));
            }
        } else {
            entry.slots.insert_range(token.parse::<SlotRange>()?);
        }
    }
    Ok(entry)
}

/// `ip:port@cport[,hostname]`; `:0@0` (or an empty host) means no address.
fn parse_address(s: &str) -> Result<(Option<NodeAddr>, u16, Option<String>), ModelError> {
    let (addr_part, hostname) = match s.split_once(',') {
        Some((a, h)) if !h.is_empty() => (a, Some(h.to_owned())),
        Some((a, _)) => (a, None),
        None => (s, None),
    };
    let (client, bus) = addr_part.split_once('@').unwrap_or((addr_part, "0"));
    let bus_port: u16 = bus.parse().map_err(|_| ModelError::Addr(s.to_owned()))?;
    let (host, port) = client
        .rsplit_once(':')
        .ok_or_else(|| ModelError::Addr(s.to_owned()))?;
    let port: u16 = port.parse().map_err(|_| ModelError::Addr(s.to_owned()))?;
    let addr = if host.is_empty() || port == 0 {
        None
    } else {
        Some(NodeAddr::new(host, port))
    };
    Ok((addr, bus_port, hostname))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "07c37dfeb235213a872192d90877d0cd55635b91";
    const B: &str = "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1";
    const C: &str = "292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f";

    #[test]
    fn parses_every_flag_and_token() {
        let text = format!(
            "{A} 127.0.0.1:30004@31004,host-a slave {B} 0 1426238317239 4 connected\n\
             {B} 127.0.0.1:30002@31002 myself,master - 0 1426238316232 2 connected 5461-10922 11000 [5460-<-{C}] [10922->-{C}]\n\
             {C} :0@0 master,fail?,fail,noaddr,nofailover - 1426238316232 0 1 disconnected 0-5459\n"
        );
        let entries = parse_cluster_nodes(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entries.len(), 3);
        let a = &entries[0];
        assert_eq!(a.role(), Role::Replica);
        assert_eq!(a.master.as_ref().map(NodeId::as_str), Some(B));
        assert_eq!(a.hostname.as_deref(), Some("host-a"));
        assert_eq!(a.addr, Some(NodeAddr::new("127.0.0.1", 30004)));
        assert_eq!(a.bus_port, 31004);
        let b = &entries[1];
        assert!(b.flags.myself && b.flags.master);
        // open-slot markers are not ownership (PITFALLS 17)
        assert_eq!(b.slots.len(), 5462 + 1);
        assert!(!b
            .slots
            .contains(Slot::new(5460).unwrap_or_else(|e| panic!("{e}"))));
        assert_eq!(b.importing.len(), 1);
        assert_eq!(b.importing[0].peer.as_str(), C);
        assert_eq!(b.migrating[0].slot.get(), 10922);
        let c = &entries[2];
        assert!(c.flags.pfail && c.flags.fail && c.flags.noaddr && c.flags.nofailover);
        assert_eq!(c.addr, None);
        assert!(!c.connected);
        assert!(c.is_failed());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_cluster_nodes("hello world").is_err());
        assert!(parse_cluster_nodes(&format!("{A} 1.2.3.4:1@2 master - 0 0 x connected")).is_err());
        assert!(parse_cluster_nodes(&format!("{A} 1.2.3.4:1@2 wizard - 0 0 1 connected")).is_err());
        assert!(
            parse_cluster_nodes(&format!("{A} 1.2.3.4:1@2 master - 0 0 1 connected 16384"))
                .is_err()
        );
        assert!(parse_cluster_nodes(&format!(
            "{A} 1.2.3.4:1@2 master - 0 0 1 connected [1-x-{B}]"
        ))
        .is_err());
    }
}
