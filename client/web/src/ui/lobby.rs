//! The lobby: room, name, a preview of the camera, the devices to use (with
//! a level meter for the microphone), and the way in.

use std::time::Duration;

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use web_sys::{AudioContext, AudioContextOptions, MediaStream, MediaStreamTrack};

use super::Screen;
use crate::call::{Call, JoinRequest};
use crate::media::capture;
use crate::media::devices::{Choice, Device, DeviceKind};
use crate::media::level::LevelMeter;
use crate::params::{PageParams, check_lobby};
use crate::{http, transport};

/// How often the microphone meter is redrawn.
const METER_EVERY: Duration = Duration::from_millis(100);

#[component]
pub fn Lobby(
    params: PageParams,
    owner: Owner,
    screen: RwSignal<Screen, LocalStorage>,
) -> impl IntoView {
    let room = RwSignal::new(params.room.clone().unwrap_or_else(|| "lobby".into()));
    let name = RwSignal::new(params.name.clone().unwrap_or_default());
    let stream: RwSignal<Option<MediaStream>, LocalStorage> = RwSignal::new_local(None);
    let device_error = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let preview: NodeRef<html::Video> = NodeRef::new();
    let choice = RwSignal::new(capture::remembered());
    let devices: RwSignal<Vec<Device>> = RwSignal::new(Vec::new());
    let meter: StoredValue<Option<LevelMeter>, LocalStorage> = StoredValue::new_local(None);
    let level = RwSignal::new(0.0_f64);

    // Opens the chosen devices (again, after a choice changed), then lists
    // what the browser offers: names only come with permission.
    // Only the newest opening counts: a choice changed twice quickly must
    // not leave the first device running, or win over the second.
    let openings = StoredValue::new(0_u64);
    let open = move || {
        openings.update_value(|n| *n += 1);
        let this = openings.get_value();
        spawn_local(async move {
            let wanted = choice.get_untracked();
            let opened = capture::open(&wanted).await;
            if openings.try_get_value() != Some(this) {
                if let Ok(stale) = opened {
                    capture::stop(&stale);
                }
                return;
            }
            let listed = capture::devices().await;
            let available = wanted.clone().still_available(&listed);
            let _ = devices.try_set(listed);
            if available != wanted {
                capture::remember(&available);
                let _ = choice.try_set(available);
            }
            match opened {
                Ok(opened) => {
                    let _ = device_error.try_set(None);
                    match stream.try_set(Some(opened.clone())) {
                        Some(_) => capture::stop(&opened), // the lobby is gone already
                        None => meter.set_value(LevelMeter::start(&opened).ok()),
                    }
                }
                Err(message) => {
                    let _ = device_error.try_set(Some(message));
                }
            }
        });
    };
    open();
    let choose = move |kind: DeviceKind, id: String| {
        choice.update(|c| c.set(kind, Some(id)));
        capture::remember(&choice.get_untracked());
        if kind != DeviceKind::Speaker {
            meter.set_value(None);
            if let Some(old) = stream.get_untracked() {
                capture::stop(&old);
            }
            stream.set(None);
            open();
        }
    };
    if let Ok(timer) = set_interval_with_handle(
        move || meter.with_value(|m| level.set(m.as_ref().map_or(0.0, LevelMeter::level))),
        METER_EVERY,
    ) {
        on_cleanup(move || timer.clear());
    }
    Effect::new(move |_| {
        if let (Some(video), Some(stream)) = (preview.get(), stream.get()) {
            video.set_src_object(Some(&stream));
        }
    });

    let candidates_path = params.candidates_path();
    let join = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let (room_name, display_name) = (room.get_untracked(), name.get_untracked());
        if let Err(message) = check_lobby(&room_name, &display_name) {
            error.set(Some(message));
            return;
        }
        // Created while handling the click, so the browser lets it play.
        let options = AudioContextOptions::new();
        options.set_sample_rate(48_000.0);
        let audio = match AudioContext::new_with_context_options(&options) {
            Ok(audio) => audio,
            Err(e) => {
                error.set(Some(format!(
                    "This browser cannot play audio: {}",
                    transport::describe(&e)
                )));
                return;
            }
        };
        if let Some(speaker) = choice.get_untracked().speaker {
            capture::play_through(&audio, &speaker);
        }
        meter.set_value(None);
        busy.set(true);
        error.set(None);
        let path = candidates_path.clone();
        let owner = owner.clone();
        spawn_local(async move {
            let prepared = async {
                let token = http::token(&room_name, display_name.trim()).await?;
                let list = http::candidates(&path).await?;
                Ok::<_, String>((token, list))
            }
            .await;
            match prepared {
                Ok((token, list)) => {
                    let request = JoinRequest {
                        room: room_name,
                        token,
                        candidates: list.candidates,
                        stream: stream.get_untracked(),
                        audio,
                    };
                    screen.set(Screen::Call(Call::start(request, owner)));
                }
                Err(message) => {
                    let _ = audio.close();
                    error.set(Some(message));
                    busy.set(false);
                    meter.set_value(
                        stream
                            .get_untracked()
                            .and_then(|s| LevelMeter::start(&s).ok()),
                    );
                }
            }
        });
    };

    view! {
        <main class="lobby" data-view="lobby">
            <h1>"rallypoint"</h1>
            <p class="tagline">"Calls that pick the fastest relay, measured from your browser."</p>
            <div class="lobby-grid">
                <figure class="preview"
                    data-camera-label=move || stream.with(|s| s.as_ref().map(|s| track_label(s.get_video_tracks().get(0))))
                    data-microphone-label=move || stream.with(|s| s.as_ref().map(|s| track_label(s.get_audio_tracks().get(0))))>
                    <video node_ref=preview autoplay=true muted=true playsinline=true aria-label="Your camera preview"></video>
                    <figcaption>
                        {move || match (stream.get().is_some(), device_error.get()) {
                            (true, _) => "Camera and microphone ready".to_owned(),
                            (false, Some(message)) => message,
                            (false, None) => "Asking for your camera and microphone…".to_owned(),
                        }}
                    </figcaption>
                </figure>
                <form class="join" on:submit=join>
                    <DevicePicker kind=DeviceKind::Camera label="Camera" devices choice choose />
                    <DevicePicker kind=DeviceKind::Microphone label="Microphone" devices choice choose />
                    <meter class="level" min="0" max="1" low="0.15" high="0.9" optimum="0.5"
                        aria-label="Microphone level" data-level=move || format!("{:.2}", level.get())
                        value=move || level.get()></meter>
                    <Show when=capture::can_choose_speaker>
                        <DevicePicker kind=DeviceKind::Speaker label="Speaker" devices choice choose />
                    </Show>
                    <label for="room">"Room"</label>
                    <input id="room" name="room" type="text" required=true autocomplete="off"
                        prop:value=move || room.get()
                        on:input=move |ev| room.set(event_target_value(&ev)) />
                    <label for="name">"Your name"</label>
                    <input id="name" name="name" type="text" required=true autocomplete="name"
                        prop:value=move || name.get()
                        on:input=move |ev| name.set(event_target_value(&ev)) />
                    <button type="submit" class="primary"
                        disabled=move || busy.get() || (stream.with(Option::is_none) && device_error.with(Option::is_none))>
                        {move || match (busy.get(), device_error.get().is_some()) {
                            (true, _) => "Joining…",
                            (false, true) => "Join without camera and microphone",
                            (false, false) => "Join",
                        }}
                    </button>
                    <p class="error" role="alert">{move || error.get()}</p>
                </form>
            </div>
        </main>
    }
}

/// A list to choose one device of `kind`, the browser's default first.
#[component]
fn DevicePicker(
    kind: DeviceKind,
    label: &'static str,
    devices: RwSignal<Vec<Device>>,
    choice: RwSignal<Choice>,
    choose: impl Fn(DeviceKind, String) + Copy + 'static,
) -> impl IntoView {
    let id = match kind {
        DeviceKind::Camera => "camera",
        DeviceKind::Microphone => "microphone",
        DeviceKind::Speaker => "speaker",
    };
    let options = move || {
        let chosen = choice.with(|c| c.get(kind).map(str::to_owned));
        let mut number = 0;
        devices
            .get()
            .into_iter()
            .filter(|d| d.kind == kind && !d.id.is_empty() && d.id != "default")
            .map(|d| {
                number += 1;
                let name = if d.label.is_empty() {
                    format!("{label} {number}")
                } else {
                    d.label.clone()
                };
                let selected = chosen.as_deref() == Some(d.id.as_str());
                view! { <option value=d.id selected=selected>{name}</option> }
            })
            .collect_view()
    };
    view! {
        <label for=id>{label}</label>
        <select id=id name=id on:change=move |ev| choose(kind, event_target_value(&ev))>
            <option value="" selected=move || choice.with(|c| c.get(kind).is_none())>"Browser default"</option>
            {options}
        </select>
    }
}

/// A track's name as the browser gives it (the device's), or "".
fn track_label(track: wasm_bindgen::JsValue) -> String {
    track
        .dyn_into::<MediaStreamTrack>()
        .map(|t| t.label())
        .unwrap_or_default()
}
