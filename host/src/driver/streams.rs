//! The TCP streams to peers: the listener's accept loop, each stream's reader and
//! writer tasks, and writes through bounded queues (a peer that does not read is
//! disconnected, never buffered without limit).

use super::*;

impl Driver {
    pub(super) fn write_stream(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(s) = self.streams.get(&conn) else {
            self.drops_no_stream += 1;
            return;
        };
        match s.writer.try_send(bytes.to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A stream cannot lose bytes: a peer this far behind is disconnected.
                self.drops_write_queue_full += 1;
                tracing::warn!(
                    "{conn} to {}: peer is not reading (write queue full); disconnecting",
                    s.addr
                );
                if let Some(s) = self.streams.remove(&conn) {
                    s.reader.abort();
                }
                let now = self.now();
                self.router.handle_command(now, Command::StreamClosed(conn));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.streams.remove(&conn);
                let now = self.now();
                self.router.handle_command(now, Command::StreamClosed(conn));
            }
        }
    }

    pub(super) fn start_stream(&mut self, conn: ConnId, addr: SocketAddr, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE_CHUNKS_MAX);
        let inbox = self.inbox_tx.clone();
        tokio::spawn(async move {
            while let Some(chunk) = wrx.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return; // The reader sees the reset and reports it.
                }
            }
            let _ = wr.shutdown().await;
        });
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK_LEN];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        let _ = inbox.send(Input::Closed { conn, error: None }).await;
                        return;
                    }
                    Ok(n) => {
                        let bytes = buf[..n].to_vec();
                        if inbox.send(Input::Bytes { conn, bytes }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let error = Some(e.to_string());
                        let _ = inbox.send(Input::Closed { conn, error }).await;
                        return;
                    }
                }
            }
        });
        self.streams.insert(
            conn,
            Stream {
                writer: wtx,
                reader,
                addr,
            },
        );
    }
}

/// Accepts streams on `listener` forever, handing them to the driver.
pub(crate) async fn accept_loop(listener: TcpListener, inbox: mpsc::Sender<Input>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if inbox.send(Input::Accepted(stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        }
    }
}
