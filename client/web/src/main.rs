//! Entry point of the browser app (built by `scripts/build-web.sh` with trunk).

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(rallypoint_web::ui::App);
}

/// On the host the crate only exists for its unit tests.
#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "rallypoint-web runs in a browser: build it with scripts/build-web.sh and open it through `rallypoint up`"
    );
    std::process::exit(2);
}
