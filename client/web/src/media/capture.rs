//! The camera and the microphone.

use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{DomException, MediaStream, MediaStreamConstraints, MediaStreamTrack};

use super::video::{FPS, HEIGHT, WIDTH};

/// Asks for the camera (640x360 at 30 fps preferred) and the microphone
/// (mono, with the browser's echo cancellation). Errors are for people.
pub async fn open() -> Result<MediaStream, String> {
    let devices = web_sys::window()
        .and_then(|w| w.navigator().media_devices().ok())
        .ok_or("This page cannot use a camera: open it over https or on localhost.")?;
    let constraints = MediaStreamConstraints::new();
    constraints.set_video(&object(&[
        ("width", ideal(WIDTH as f64)),
        ("height", ideal(HEIGHT as f64)),
        ("frameRate", ideal(FPS)),
    ]));
    constraints.set_audio(&object(&[
        ("channelCount", ideal(1.0)),
        ("echoCancellation", JsValue::TRUE),
        ("noiseSuppression", JsValue::TRUE),
    ]));
    let request = devices
        .get_user_media_with_constraints(&constraints)
        .map_err(|e| explain(&e))?;
    JsFuture::from(request)
        .await
        .map(JsCast::unchecked_into)
        .map_err(|e| explain(&e))
}

/// Stops every track (the camera light goes off).
pub fn stop(stream: &MediaStream) {
    for track in stream.get_tracks() {
        track.unchecked_into::<MediaStreamTrack>().stop();
    }
}

pub fn video_track(stream: &MediaStream) -> Option<MediaStreamTrack> {
    stream.get_video_tracks().get(0).dyn_into().ok()
}

pub fn audio_track(stream: &MediaStream) -> Option<MediaStreamTrack> {
    stream.get_audio_tracks().get(0).dyn_into().ok()
}

fn explain(error: &JsValue) -> String {
    let name = error
        .dyn_ref::<DomException>()
        .map(|e| e.name())
        .unwrap_or_default();
    match name.as_str() {
        "NotAllowedError" | "SecurityError" => "Camera and microphone access was denied. Allow it for this site in the browser's address bar, or join without them.".into(),
        "NotFoundError" | "OverconstrainedError" => "No camera or microphone was found. Connect one, or join without them.".into(),
        "NotReadableError" | "AbortError" => "The camera or microphone is in use by another application. Close it, or join without them.".into(),
        _ => format!("The camera and microphone could not be opened ({}).", crate::transport::describe(error)),
    }
}

fn ideal(value: f64) -> JsValue {
    object(&[("ideal", JsValue::from_f64(value))]).into()
}

fn object(entries: &[(&str, JsValue)]) -> Object {
    let object = Object::new();
    for (key, value) in entries {
        let _ = Reflect::set(&object, &JsValue::from_str(key), value);
    }
    object
}
