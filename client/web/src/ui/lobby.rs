//! The lobby: room, name, a preview of the camera, and the way in.

use leptos::ev::SubmitEvent;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use web_sys::{AudioContext, AudioContextOptions, MediaStream};

use super::Screen;
use crate::call::{Call, JoinRequest};
use crate::media::capture;
use crate::params::{PageParams, check_lobby};
use crate::{http, transport};

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

    spawn_local(async move {
        match capture::open().await {
            Ok(opened) => {
                if stream.try_set(Some(opened.clone())).is_some() {
                    capture::stop(&opened); // the lobby is gone already
                }
            }
            Err(message) => {
                let _ = device_error.try_set(Some(message));
            }
        }
    });
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
                }
            }
        });
    };

    view! {
        <main class="lobby" data-view="lobby">
            <h1>"rallypoint"</h1>
            <p class="tagline">"Calls that pick the fastest relay, measured from your browser."</p>
            <div class="lobby-grid">
                <figure class="preview">
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
