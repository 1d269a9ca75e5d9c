//! The UDP ports RTP binds in: a configured range (`CENTRALITA_RTP_PORTS`, `first-last`),
//! kept below the kernel's ephemeral range so outgoing connections never take them. Each
//! stream takes an even port (RTCP's odd neighbour is left free, unused for now); a port
//! found taken is skipped.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::UdpSocket;

/// An inclusive range of UDP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.trim().split_once('-').ok_or("expected `first-last`, e.g. `20000-29999`")?;
        let first: u16 = a.trim().parse().map_err(|_| format!("`{a}` is not a port"))?;
        let last: u16 = b.trim().parse().map_err(|_| format!("`{b}` is not a port"))?;
        if first < 1024 {
            return Err("the range must start at 1024 or above".into());
        }
        let range = Self { first, last };
        if last < first || range.slots() == 0 {
            return Err("the range must hold at least one even port and its odd neighbour".into());
        }
        Ok(range)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl PortRange {
    /// The even ports of the range whose odd neighbour is in it too.
    fn slots(&self) -> u32 {
        let first = u32::from(self.first).div_ceil(2) * 2;
        (u32::from(self.last) + 1).saturating_sub(first) / 2
    }

    fn slot(&self, n: u32) -> u16 {
        let first = u32::from(self.first).div_ceil(2) * 2;
        (first + 2 * n) as u16
    }
}

/// Hands out RTP sockets from a range, round-robin so a port just released is not reused
/// at once (a late packet of the old call would reach the new one).
#[derive(Debug)]
pub struct Ports {
    ip: IpAddr,
    range: PortRange,
    next: AtomicU32,
}

#[derive(Debug, thiserror::Error)]
#[error("no free RTP port in {0} on {1}")]
pub struct Exhausted(pub PortRange, pub IpAddr);

impl Ports {
    pub fn new(ip: IpAddr, range: PortRange) -> Self {
        // From a random slot: a process restarted after a crash does not start on the ports
        // its predecessor's calls held, whose peers may still be sending there (the relay
        // latches on the first source it hears).
        let mut seed = [0u8; 4];
        let start = getrandom::fill(&mut seed).map_or(0, |()| u32::from_le_bytes(seed)) % range.slots().max(1);
        Self { ip, range, next: AtomicU32::new(start) }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// A socket bound to the next free even port of the range.
    pub async fn bind(&self) -> Result<UdpSocket, Exhausted> {
        let slots = self.range.slots();
        for _ in 0..slots {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % slots;
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(self.ip, self.range.slot(n))).await {
                return Ok(socket);
            }
        }
        Err(Exhausted(self.range, self.ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_and_checked() {
        assert_eq!("20000-29999".parse(), Ok(PortRange { first: 20000, last: 29999 }));
        assert!("29999-20000".parse::<PortRange>().is_err());
        assert!("80-90".parse::<PortRange>().is_err());
        assert!("20000".parse::<PortRange>().is_err());
        assert!("20000-x".parse::<PortRange>().is_err());
        assert!("20000-20000".parse::<PortRange>().is_err());
        let odd: PortRange = "20001-20005".parse().expect("valid");
        assert_eq!((odd.slots(), odd.slot(0), odd.slot(1)), (2, 20002, 20004));
        assert!("20001-20002".parse::<PortRange>().is_err(), "20002 without 20003 is no slot");
    }

    #[tokio::test]
    async fn sockets_take_even_ports_skip_taken_ones_and_run_out() {
        let range: PortRange = "22900-22905".parse().expect("valid");
        let ports = Ports::new("127.0.0.1".parse().expect("ip"), range);
        let taken = UdpSocket::bind("127.0.0.1:22902").await.expect("bind");
        let a = ports.bind().await.expect("a port");
        let b = ports.bind().await.expect("a port");
        let mut got = [a.local_addr().expect("addr").port(), b.local_addr().expect("addr").port()];
        got.sort_unstable();
        assert_eq!(got, [22900, 22904]);
        assert!(ports.bind().await.is_err(), "all three slots are held");
        drop((a, taken));
        assert!(ports.bind().await.is_ok());
    }

    #[tokio::test]
    async fn each_process_starts_on_a_random_slot() {
        let range: PortRange = "23000-23099".parse().expect("valid");
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..20 {
            let ports = Ports::new("127.0.0.1".parse().expect("ip"), range);
            let socket = ports.bind().await.expect("a port");
            let port = socket.local_addr().expect("addr").port();
            assert!((23000..=23098).contains(&port) && port % 2 == 0, "{port}");
            firsts.insert(port);
        }
        assert!(firsts.len() > 1, "20 processes all began on {firsts:?}");
    }
}
