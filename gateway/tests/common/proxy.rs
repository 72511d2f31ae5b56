//! A TCP proxy a test can cut and restore: put in front of a node's gRPC listener (as its
//! `cluster.advertise_addr`), it makes the links other nodes dial to it go down and come back,
//! while the node itself keeps running; or hold what the dialer sends (`hold`/`release`): the
//! link stays up but its frames wait, as on a congested network.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CutProxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Bytes from the dialer are forwarded while this is true.
    flowing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (up, _) = watch::channel(true);
        let (flowing, _) = watch::channel(true);
        let watch = up.subscribe();
        let flow = flowing.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*watch.borrow() {
                    // Cut: the connection is accepted and closed at once.
                    continue;
                }
                let mut cut = watch.clone();
                let mut flow = flow.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = from_client.read(&mut buf).await?;
                            if n == 0 || flow.wait_for(|f| *f).await.is_err() {
                                return Ok::<(), std::io::Error>(());
                            }
                            to_server.write_all(&buf[..n]).await?;
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            flowing,
            task,
        }
    }

    /// Closes every connection through the proxy and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    /// Holds every byte the dialers send (the connections stay open) until `release`.
    pub fn hold(&self) {
        self.flowing.send_replace(false);
    }

    pub fn release(&self) {
        self.flowing.send_replace(true);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
