//! Reloading TLS files when they change.
//!
//! The directories holding the files are watched rather than the files, as
//! Kubernetes swaps a Secret's files by replacing a symlink. Changes are
//! debounced (a certificate and its key are often written one after the
//! other) and the reload runs until the drain starts.

use std::{path::PathBuf, time::Duration};

use notify::Watcher;

use crate::drain::Drain;

/// Calls `reload` after any change in the directories of `files`, until
/// `drain` is signalled. `what` names the files in log lines.
pub fn on_change(
    what: &'static str,
    files: Vec<PathBuf>,
    mut drain: Drain,
    reload: impl Fn() + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|p| p.parent().map(std::path::Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => {
            for dir in &dirs {
                if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(what, dir = %dir.display(), error = %e, "cannot watch TLS files; they will not be reloaded");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(what, error = %e, "cannot watch TLS files; they will not be reloaded");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                () = drain.signaled() => return,
                Some(()) = rx.recv() => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            reload();
        }
    });
}
