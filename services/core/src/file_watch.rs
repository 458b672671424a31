//! Watching a config file for changes by polling its bytes at its path, so a Kubernetes
//! ConfigMap update (a symlink swap, no inotify event on the file itself) is seen too.

use std::{future::Future, path::PathBuf, time::Duration};

use tokio_util::sync::CancellationToken;

/// Calls `on_change` every time the file's bytes differ from the previous read, checking every
/// `interval` until `shutdown`. The first read happens in this call (not when the future first
/// runs), so a change made in between counts. An unreadable file is skipped until it can be
/// read again.
pub fn on_file_change<F, Fut>(
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
    mut on_change: F,
) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut last = std::fs::read(&path).ok();
    async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            if last.as_ref() != Some(&bytes) {
                last = Some(bytes);
                on_change().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn only_real_changes_are_reported_including_a_symlink_swap() {
        let dir = tempfile_dir();
        let data_a = dir.join("a.yaml");
        let data_b = dir.join("b.yaml");
        let link = dir.join("collections.yaml");
        std::fs::write(&data_a, "one").unwrap();
        std::fs::write(&data_b, "two").unwrap();
        std::os::unix::fs::symlink(&data_a, &link).unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn({
            let (changes, shutdown, link) = (changes.clone(), shutdown.clone(), link.clone());
            async move {
                on_file_change(link, Duration::from_millis(10), shutdown, || {
                    changes.fetch_add(1, Ordering::SeqCst);
                    async {}
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(changes.load(Ordering::SeqCst), 0, "no change, no call");
        // What the kubelet does: point the link elsewhere.
        let tmp = dir.join("new-link");
        std::os::unix::fs::symlink(&data_b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(changes.load(Ordering::SeqCst), 1);
        shutdown.cancel();
        watcher.await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("courier-file-watch-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
