//! What the native client's tests share.

use std::time::Duration;

use rallypoint_client::session::Update;
use rallypoint_client_native::runner::Output;
use tokio::sync::mpsc;

/// Waits up to `within` for the runner's first decision: it is in the room.
pub async fn decided(outputs: &mut mpsc::UnboundedReceiver<Output>, within: Duration) {
    tokio::time::timeout(within, async {
        while let Some(output) = outputs.recv().await {
            if let Output::Session(Update::Decided { .. }) = output {
                return;
            }
        }
        panic!("the runner stopped before deciding");
    })
    .await
    .expect("a decision");
}
