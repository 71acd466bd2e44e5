//! Free loopback ports for servers we start. The port is found by binding to
//! port 0 and released before the server binds it: a small race that tests
//! tolerate by retrying a start once.

use std::net::{TcpListener, UdpSocket};

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work on any machine with loopback")
}

/// A port free on 127.0.0.1 for both UDP and TCP (WebTransport relays use UDP;
/// keeping TCP free too avoids surprises when a port is reused for HTTP).
pub fn free_udp() -> u16 {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding UDP 127.0.0.1:0");
        let port = socket.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
