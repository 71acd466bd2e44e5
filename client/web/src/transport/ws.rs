//! WebSocket: one binary message per frame. Works on every network that lets
//! HTTPS through, which is why WebSocket candidates always stay in the
//! tournament.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use rallypoint_protocol::decode_server_frame;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::{Incoming, Received};
use crate::clock;

pub struct WsConnection {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for WsConnection {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close();
    }
}

impl WsConnection {
    pub fn send(&self, bytes: &[u8]) -> bool {
        self.socket.ready_state() == WebSocket::OPEN
            && self.socket.send_with_u8_array(bytes).is_ok()
    }
}

/// Opens the socket; resolves once it is open (or failed to open).
pub async fn open(url: &str) -> Result<(WsConnection, Incoming), String> {
    let socket = WebSocket::new(url).map_err(|e| format!("WebSocket: {}", super::describe(&e)))?;
    socket.set_binary_type(BinaryType::Arraybuffer);
    let (frames, incoming) = mpsc::unbounded();
    // Dropped when the socket closes, which ends `incoming`.
    let frames = Rc::new(RefCell::new(Some(frames)));
    let (opened_tx, opened) = oneshot::channel::<Result<(), String>>();
    let opened_tx = Rc::new(RefCell::new(Some(opened_tx)));

    let on_open = {
        let opened_tx = opened_tx.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = opened_tx.borrow_mut().take() {
                let _ = tx.send(Ok(()));
            }
        })
    };
    let on_message = {
        let frames = frames.clone();
        let socket = socket.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let at = clock::now();
            let Ok(buffer) = event.data().dyn_into::<js_sys::ArrayBuffer>() else {
                return; // text messages are not part of the protocol
            };
            let bytes = Bytes::from(js_sys::Uint8Array::new(&buffer).to_vec());
            match decode_server_frame(bytes) {
                Ok(frame) => {
                    if let Some(tx) = frames.borrow().as_ref() {
                        let _ = tx.unbounded_send(Received { frame, at });
                    }
                }
                Err(_) => {
                    // The stream cannot be trusted any more.
                    frames.borrow_mut().take();
                    let _ = socket.close();
                }
            }
        })
    };
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        if let Some(tx) = opened_tx.borrow_mut().take() {
            let _ = tx.send(Err(format!(
                "WebSocket closed before opening (code {})",
                event.code()
            )));
        }
        frames.borrow_mut().take();
    });
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let connection = WsConnection {
        socket,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    };
    match opened.await {
        Ok(Ok(())) => Ok((connection, incoming)),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("WebSocket vanished while opening".into()),
    }
}
