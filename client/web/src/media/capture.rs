//! The camera and the microphone.

use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DomException, MediaDeviceInfo, MediaDevices, MediaStream, MediaStreamConstraints,
    MediaStreamTrack,
};

use super::devices::{Choice, Device, DeviceKind};

use super::video::{FPS, HEIGHT, WIDTH};

/// Asks for the camera (640x360 at 30 fps preferred) and the microphone
/// (mono, with the browser's echo cancellation), the ones `choice` names or
/// the browser's defaults. A chosen device that cannot be opened (gone, or
/// in use) gives way to the default rather than leaving the lobby without
/// media. Errors are for people.
pub async fn open(choice: &Choice) -> Result<MediaStream, String> {
    if media_devices().is_none() {
        return Err("This page cannot use a camera: open it over https or on localhost.".into());
    }
    match request(choice).await {
        Err(_) if choice.camera.is_some() || choice.microphone.is_some() => {
            request(&Choice::default()).await.map_err(|e| explain(&e))
        }
        result => result.map_err(|e| explain(&e)),
    }
}

async fn request(choice: &Choice) -> Result<MediaStream, JsValue> {
    let mut audio = vec![
        ("channelCount", ideal(1.0)),
        ("echoCancellation", JsValue::TRUE),
        ("noiseSuppression", JsValue::TRUE),
    ];
    if let Some(id) = &choice.microphone {
        audio.push(("deviceId", exact(id)));
    }
    user_media(&camera(choice.camera.as_deref()), &object(&audio).into()).await
}

/// The camera's constraints: 640x360 at 30 fps preferred, device `id` or
/// the browser's default.
fn camera(id: Option<&str>) -> JsValue {
    let mut video = vec![
        ("width", ideal(WIDTH as f64)),
        ("height", ideal(HEIGHT as f64)),
        ("frameRate", ideal(FPS)),
    ];
    if let Some(id) = id {
        video.push(("deviceId", exact(id)));
    }
    object(&video).into()
}

async fn user_media(video: &JsValue, audio: &JsValue) -> Result<MediaStream, JsValue> {
    let devices = media_devices().ok_or(JsValue::NULL)?;
    let constraints = MediaStreamConstraints::new();
    constraints.set_video(video);
    constraints.set_audio(audio);
    let request = devices.get_user_media_with_constraints(&constraints)?;
    JsFuture::from(request).await.map(JsCast::unchecked_into)
}

fn media_devices() -> Option<MediaDevices> {
    web_sys::window().and_then(|w| w.navigator().media_devices().ok())
}

/// The cameras, microphones and speakers the browser offers (with names
/// once the page may use them).
pub async fn devices() -> Vec<Device> {
    let Some(media) = media_devices() else {
        return Vec::new();
    };
    let Ok(listing) = media.enumerate_devices() else {
        return Vec::new();
    };
    let Ok(list) = JsFuture::from(listing).await else {
        return Vec::new();
    };
    js_sys::Array::from(&list)
        .iter()
        .filter_map(|info| {
            let info: MediaDeviceInfo = info.dyn_into().ok()?;
            let kind = DeviceKind::from_browser(&JsValue::from(info.kind()).as_string()?)?;
            Some(Device {
                kind,
                id: info.device_id(),
                label: info.label(),
            })
        })
        .collect()
}

/// The devices chosen on an earlier visit.
pub fn remembered() -> Choice {
    let mut choice = Choice::default();
    if let Some(storage) = storage() {
        for kind in DeviceKind::ALL {
            choice.set(kind, storage.get_item(kind.storage_key()).ok().flatten());
        }
    }
    choice
}

/// Keeps `choice` for the next visit.
pub fn remember(choice: &Choice) {
    let Some(storage) = storage() else { return };
    for kind in DeviceKind::ALL {
        let _ = match choice.get(kind) {
            Some(id) => storage.set_item(kind.storage_key(), id),
            None => storage.remove_item(kind.storage_key()),
        };
    }
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// Whether the page can choose where it plays sound (`AudioContext.setSinkId`,
/// Chromium 110+).
pub fn can_choose_speaker() -> bool {
    web_sys::window()
        .and_then(|w| Reflect::get(&w, &"AudioContext".into()).ok())
        .and_then(|ctor| Reflect::get(&ctor, &"prototype".into()).ok())
        .is_some_and(|proto| Reflect::has(&proto, &"setSinkId".into()).unwrap_or(false))
}

/// Plays `context` through the speaker `id` (where the browser allows it).
pub fn play_through(context: &web_sys::AudioContext, id: &str) {
    let Ok(set_sink) = Reflect::get(context, &"setSinkId".into()) else {
        return;
    };
    if let Some(set_sink) = set_sink.dyn_ref::<js_sys::Function>() {
        let _ = set_sink.call1(context, &JsValue::from_str(id));
    }
}

/// Why a camera did not open.
#[derive(Debug)]
pub struct CameraError {
    /// For people.
    pub message: String,
    /// The device is held (by this page or another application): phones
    /// often run one camera at a time.
    pub busy: bool,
}

/// Opens the camera `id` alone (to switch cameras in a call).
pub async fn open_camera(id: &str) -> Result<MediaStreamTrack, CameraError> {
    let stream = user_media(&camera(Some(id)), &JsValue::FALSE)
        .await
        .map_err(|e| CameraError {
            message: explain(&e),
            busy: matches!(error_name(&e).as_str(), "NotReadableError" | "AbortError"),
        })?;
    video_track(&stream).ok_or_else(|| CameraError {
        message: "That camera gave no picture.".to_owned(),
        busy: false,
    })
}

/// The camera a track comes from.
pub fn device_id(track: &MediaStreamTrack) -> Option<String> {
    track.get_settings().get_device_id()
}

/// Asks which screen, window or tab to share (the browser asks the person),
/// at most 1920x1080 and 15 fps: a 4K screen would cost the encoder and the
/// room more than legible text needs. Errors are for people; `None` when
/// the person chose not to share.
pub async fn open_screen() -> Result<Option<MediaStream>, String> {
    let devices = media_devices().ok_or("This page cannot share a screen: open it over https.")?;
    let constraints = web_sys::DisplayMediaStreamConstraints::new();
    constraints.set_video(&object(&[
        (
            "width",
            object(&[("max", JsValue::from_f64(1920.0))]).into(),
        ),
        (
            "height",
            object(&[("max", JsValue::from_f64(1080.0))]).into(),
        ),
        (
            "frameRate",
            object(&[("max", JsValue::from_f64(15.0))]).into(),
        ),
    ]));
    constraints.set_audio(&JsValue::FALSE);
    let request = devices
        .get_display_media_with_constraints(&constraints)
        .map_err(|e| {
            format!(
                "Screen sharing is not available: {}",
                crate::transport::describe(&e)
            )
        })?;
    match JsFuture::from(request).await {
        Ok(stream) => Ok(Some(stream.unchecked_into())),
        Err(e) => match e.dyn_ref::<DomException>().map(|e| e.name()).as_deref() {
            Some("NotAllowedError" | "AbortError") => Ok(None),
            _ => Err(format!(
                "The screen could not be shared ({}).",
                crate::transport::describe(&e)
            )),
        },
    }
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

fn error_name(error: &JsValue) -> String {
    error
        .dyn_ref::<DomException>()
        .map(|e| e.name())
        .unwrap_or_default()
}

fn explain(error: &JsValue) -> String {
    match error_name(error).as_str() {
        "NotAllowedError" | "SecurityError" => "Camera and microphone access was denied. Allow it for this site in the browser's address bar, or join without them.".into(),
        "NotFoundError" | "OverconstrainedError" => "No camera or microphone was found. Connect one, or join without them.".into(),
        "NotReadableError" | "AbortError" => "The camera or microphone is in use by another application. Close it, or join without them.".into(),
        _ => format!("The camera and microphone could not be opened ({}).", crate::transport::describe(error)),
    }
}

fn exact(id: &str) -> JsValue {
    object(&[("exact", JsValue::from_str(id))]).into()
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
