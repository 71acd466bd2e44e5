//! What one proxy puts between its clients and its upstream: the link to the
//! upstream's region and, when the scenario has one, the location's access
//! line — one bottleneck per direction that every proxy of the location
//! crosses, so a region's media fills the queue another region's probe
//! answers wait in, as on a real home line.
//!
//! The line is modelled at the proxy's end: a packet joins its queue when
//! the proxy reads it, before the path's delay, where a real one coming
//! down would join on reaching the line. On a steadily loaded line the wait
//! is the same; but a packet from a far region takes its place in the queue
//! earlier than it would, by up to the difference of the paths' one-way
//! delays (100 ms between the failover bench's regions), so packets of two
//! regions may leave the line in another order than a real line's. And
//! several byte streams (TCP) on one line each check for room before they
//! read and join the queue after, so together they can fill it past its
//! length by up to a read each (a read takes at most what the queue had
//! room for, or 256 B).

use std::sync::Arc;
use std::time::Instant;

use super::scenario::{AccessSpec, Bottleneck, LineSpec, LinkSpec, OneWay};
use super::timing::{BottleneckQueue, Impairment};

/// A location's access line, shared (cloned) by all of its proxies.
#[derive(Clone, Default)]
pub struct AccessLine {
    up: Option<Arc<BottleneckQueue>>,
    down: Option<Arc<BottleneckQueue>>,
}

impl AccessLine {
    /// The line `spec` describes; none (each path as fast as its link) for
    /// `None`.
    pub fn new(spec: Option<&AccessSpec>) -> AccessLine {
        let now = Instant::now();
        let queue = |line: Option<LineSpec>| {
            line.map(|line| {
                Arc::new(BottleneckQueue::slowing_at(
                    line.bottleneck(),
                    now + line.slow_after(),
                ))
            })
        };
        let spec = spec.copied().unwrap_or_default();
        AccessLine {
            up: queue(spec.up),
            down: queue(spec.down),
        }
    }
}

/// Which way packets flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// Client → upstream.
    Up,
    /// Upstream → client.
    Down,
}

/// A proxy's path: its link and its location's access line.
#[derive(Clone)]
pub struct Path {
    link: LinkSpec,
    access: AccessLine,
}

impl Path {
    /// `link` behind `access`. The scenario's validation keeps a direction
    /// from having both a bottleneck of its own and an access line; given
    /// both anyway, the access line is the one crossed.
    pub fn new(link: LinkSpec, access: &AccessLine) -> Path {
        Path {
            link,
            access: access.clone(),
        }
    }

    pub(crate) fn link(&self) -> &LinkSpec {
        &self.link
    }

    /// The bottleneck packets going `way` cross, if any.
    pub(crate) fn bottleneck(&self, way: Way) -> Option<Bottleneck> {
        match self.line(way) {
            Some(line) => Some(line.link()),
            None => self.one_way(way).bottleneck,
        }
    }

    /// A fresh direction `way` with its own random numbers: through the
    /// access line when there is one, else through a bottleneck of its own
    /// if the link has one.
    pub(crate) fn impairment(&self, way: Way, seed: u64) -> Impairment {
        let one_way = self.one_way(way);
        match self.line(way) {
            Some(line) => Impairment::through(one_way, seed, Some(Arc::clone(line))),
            None => Impairment::new(one_way, seed),
        }
    }

    fn one_way(&self, way: Way) -> OneWay {
        match way {
            Way::Up => self.link.up(),
            Way::Down => self.link.down(),
        }
    }

    fn line(&self, way: Way) -> Option<&Arc<BottleneckQueue>> {
        match way {
            Way::Up => self.access.up.as_ref(),
            Way::Down => self.access.down.as_ref(),
        }
    }
}

impl From<LinkSpec> for Path {
    /// A link with no access line in front of it.
    fn from(link: LinkSpec) -> Path {
        Path::new(link, &AccessLine::default())
    }
}
