//! WebTransport (HTTP/3, QUIC): control frames on the first bidirectional
//! stream with a 4-byte length prefix, probes and small media as datagrams
//! (so probes measure the UDP path and media is never held up by a lost
//! packet), larger media on unidirectional streams: one per frame towards
//! the relay; from it, one per group of pictures (or per frame from a relay
//! that predates groups).
//!
//! Development relays use self-signed certificates; the candidate list then
//! carries their SHA-256, passed as `serverCertificateHashes`.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::mpsc;
use js_sys::{Reflect, Uint8Array};
use rallypoint_protocol::media_streams::StreamFrames;
use rallypoint_protocol::{decode_server_frame, length_prefixed, limits};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    ReadableStream, ReadableStreamDefaultReader, WebTransport, WebTransportBidirectionalStream,
    WebTransportHash, WebTransportOptions, WritableStream, WritableStreamDefaultWriter,
};

use super::{Incoming, Received, describe};
use crate::clock;
use rallypoint_client::session::Route;

/// Media streams being opened (waiting for the relay's stream credit) or
/// written at once; beyond this a frame is dropped, as a congested network
/// would (the receiver asks for a keyframe). A written stream is closed
/// without waiting for the relay's acknowledgement, which would hold its
/// slot a round trip: 32 frames per round trip, 107 a second at 300 ms.
const MAX_STREAMS_IN_FLIGHT: usize = 32;

/// Whether this browser has WebTransport at all.
pub fn available() -> bool {
    Reflect::has(&js_sys::global(), &JsValue::from_str("WebTransport")).unwrap_or(false)
}

pub struct WtConnection {
    transport: WebTransport,
    control: WritableStreamDefaultWriter,
    datagrams: WritableStreamDefaultWriter,
    max_datagram: usize,
    streams_in_flight: Rc<Cell<usize>>,
}

thread_local! {
    /// Swallows rejections of writes on a closing connection: the loss is
    /// noticed through the readers ending, not through each write. One for
    /// the page's lifetime, since writes may be rejected after their
    /// connection is gone.
    static IGNORE: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
}

impl Drop for WtConnection {
    fn drop(&mut self) {
        self.transport.close();
    }
}

impl WtConnection {
    /// Largest frame sent as one datagram.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    pub fn send(&self, bytes: Bytes, route: Route) -> bool {
        match route {
            Route::Control => self.write(&self.control, &length_prefixed::encode(&bytes)),
            // One queue for both: the browser's. (`outgoingMaxAge` would
            // bound its age, but would drop probes with the media.)
            Route::Probe | Route::Datagram => self.write(&self.datagrams, &bytes),
            Route::Stream => {
                if self.streams_in_flight.get() >= MAX_STREAMS_IN_FLIGHT {
                    return false;
                }
                self.streams_in_flight.set(self.streams_in_flight.get() + 1);
                let opening = JsFuture::from(self.transport.create_unidirectional_stream());
                let in_flight = self.streams_in_flight.clone();
                spawn_local(async move {
                    if let Ok(stream) = opening.await {
                        let stream: WritableStream = stream.unchecked_into();
                        if let Ok(writer) = stream.get_writer() {
                            let chunk = Uint8Array::from(&bytes[..]);
                            let _ = JsFuture::from(writer.write_with_chunk(&chunk)).await;
                            IGNORE.with(|ignore| {
                                let _ = writer.close().catch(ignore);
                            });
                        }
                    }
                    in_flight.set(in_flight.get() - 1);
                });
                true
            }
        }
    }

    /// Writes a last control frame and closes the control stream; resolves
    /// when the browser has taken both.
    pub async fn finish(&self, bytes: &[u8]) {
        let chunk = Uint8Array::from(&length_prefixed::encode(bytes)[..]);
        let _ = JsFuture::from(self.control.write_with_chunk(&chunk)).await;
        let _ = JsFuture::from(self.control.close()).await;
    }

    fn write(&self, writer: &WritableStreamDefaultWriter, bytes: &[u8]) -> bool {
        let chunk = Uint8Array::from(bytes);
        IGNORE.with(|ignore| {
            let _ = writer.write_with_chunk(&chunk).catch(ignore);
        });
        true
    }
}

/// Connects and opens the control stream.
pub async fn open(
    url: &str,
    cert_hash: Option<[u8; 32]>,
) -> Result<(WtConnection, Incoming), String> {
    if !available() {
        return Err("this browser has no WebTransport".into());
    }
    let fail = |what: &str, e: JsValue| format!("WebTransport {what}: {}", describe(&e));
    let options = WebTransportOptions::new();
    if let Some(hash) = cert_hash {
        let entry = WebTransportHash::new();
        entry.set_algorithm("sha-256");
        entry.set_value_u8_array(&Uint8Array::from(&hash[..]));
        options.set_server_certificate_hashes(&[entry]);
    }
    let transport =
        WebTransport::new_with_options(url, &options).map_err(|e| fail("connect", e))?;
    // Dropping `transport` on an early return closes it.
    let guard = CloseOnDrop(Some(transport.clone()));
    JsFuture::from(transport.ready())
        .await
        .map_err(|e| fail("connect", e))?;
    let control: WebTransportBidirectionalStream =
        JsFuture::from(transport.create_bidirectional_stream())
            .await
            .map_err(|e| fail("control stream", e))?;
    let control_writer = WritableStream::from(JsValue::from(control.writable()))
        .get_writer()
        .map_err(|e| fail("control stream", e))?;
    let datagrams = transport.datagrams();
    let datagram_writer = datagrams
        .writable()
        .get_writer()
        .map_err(|e| fail("datagrams", e))?;
    let max_datagram = datagrams.max_datagram_size() as usize;

    let (frames, incoming) = mpsc::unbounded();
    spawn_local(read_control(
        reader_of(&ReadableStream::from(JsValue::from(control.readable()))),
        frames.clone(),
    ));
    spawn_local(read_datagrams(
        reader_of(&datagrams.readable()),
        frames.clone(),
    ));
    spawn_local(accept_streams(
        reader_of(&transport.incoming_unidirectional_streams()),
        frames,
    ));
    guard.disarm();
    Ok((
        WtConnection {
            transport,
            control: control_writer,
            datagrams: datagram_writer,
            max_datagram,
            streams_in_flight: Rc::new(Cell::new(0)),
        },
        incoming,
    ))
}

struct CloseOnDrop(Option<WebTransport>);

impl CloseOnDrop {
    /// The connection is handed over: keep it open.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(transport) = &self.0 {
            transport.close();
        }
    }
}

fn reader_of(stream: &ReadableStream) -> ReadableStreamDefaultReader {
    stream.get_reader().unchecked_into()
}

/// The next chunk of a stream; `None` at its end or when it failed.
async fn read(reader: &ReadableStreamDefaultReader) -> Option<JsValue> {
    let result = JsFuture::from(reader.read()).await.ok()?;
    let done = Reflect::get(&result, &JsValue::from_str("done"))
        .ok()?
        .as_bool()
        .unwrap_or(true);
    if done {
        return None;
    }
    Reflect::get(&result, &JsValue::from_str("value")).ok()
}

fn bytes_of(chunk: &JsValue) -> Option<Vec<u8>> {
    chunk.dyn_ref::<Uint8Array>().map(Uint8Array::to_vec)
}

async fn read_control(
    reader: ReadableStreamDefaultReader,
    frames: mpsc::UnboundedSender<Received>,
) {
    let mut decoder = length_prefixed::Decoder::new(limits::MAX_CONTROL_FRAME);
    while let Some(chunk) = read(&reader).await {
        let at = clock::now();
        let Some(bytes) = bytes_of(&chunk) else { break };
        decoder.push(&bytes);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => match decode_server_frame(frame) {
                    Ok(frame) => {
                        let _ = frames.unbounded_send(Received { frame, at });
                    }
                    Err(_) => return, // out of sync: the connection is unusable
                },
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

async fn read_datagrams(
    reader: ReadableStreamDefaultReader,
    frames: mpsc::UnboundedSender<Received>,
) {
    while let Some(chunk) = read(&reader).await {
        let at = clock::now();
        if let Some(frame) = bytes_of(&chunk).and_then(|b| decode_server_frame(Bytes::from(b)).ok())
        {
            let _ = frames.unbounded_send(Received { frame, at });
        }
    }
}

async fn accept_streams(
    reader: ReadableStreamDefaultReader,
    frames: mpsc::UnboundedSender<Received>,
) {
    while let Some(stream) = read(&reader).await {
        let frames = frames.clone();
        let stream: ReadableStream = stream.unchecked_into();
        spawn_local(read_media_stream(reader_of(&stream), frames));
    }
}

/// Reads one unidirectional media stream, handing over each frame as soon as
/// it is whole (one bare frame, or a group of pictures:
/// `rallypoint_protocol::media_streams`). A stream that breaks the framing is
/// cancelled; the connection lives on.
async fn read_media_stream(
    reader: ReadableStreamDefaultReader,
    frames: mpsc::UnboundedSender<Received>,
) {
    let mut stream = StreamFrames::new();
    while let Some(chunk) = read(&reader).await {
        let pushed = bytes_of(&chunk).map(|bytes| stream.push(&bytes));
        if !matches!(pushed, Some(Ok(()))) {
            let _ = reader.cancel();
            return;
        }
        loop {
            match stream.next_frame() {
                Ok(Some(frame)) => deliver(&frames, frame),
                Ok(None) => break,
                Err(_) => {
                    let _ = reader.cancel();
                    return;
                }
            }
        }
    }
    if let Ok(Some(frame)) = stream.finish() {
        deliver(&frames, frame);
    }
}

fn deliver(frames: &mpsc::UnboundedSender<Received>, bytes: Bytes) {
    let at = clock::now();
    if let Ok(frame) = decode_server_frame(bytes) {
        let _ = frames.unbounded_send(Received { frame, at });
    }
}
