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

    const INTERVAL: Duration = Duration::from_millis(10);

    /// Lets the watcher run `polls` more checks: time is paused, so each sleep of the test ends
    /// only after the watcher's timers due before it have fired and its reads have run.
    async fn let_it_poll(polls: u32) {
        tokio::time::sleep(INTERVAL * polls + INTERVAL / 2).await;
    }

    /// A watcher of `path` counting its calls, stopped (bounded) by [`Watcher::stop`].
    struct Watcher {
        changes: Arc<AtomicUsize>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Watcher {
        fn start(path: PathBuf) -> Self {
            let changes = Arc::new(AtomicUsize::new(0));
            let shutdown = CancellationToken::new();
            let counter = changes.clone();
            let task = tokio::spawn(on_file_change(path, INTERVAL, shutdown.clone(), move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {}
            }));
            Watcher { changes, shutdown, task }
        }

        fn changes(&self) -> usize {
            self.changes.load(Ordering::SeqCst)
        }

        /// Waits (virtual time, bounded) until `n` changes were reported.
        async fn wait_for_changes(&self, n: usize) {
            let waited = tokio::time::timeout(Duration::from_secs(5), async {
                while self.changes() < n {
                    tokio::time::sleep(INTERVAL).await;
                }
            })
            .await;
            assert!(waited.is_ok(), "{} changes seen, expected {n}", self.changes());
        }

        async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("the watcher stops at shutdown")
                .unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_real_changes_are_reported_including_a_symlink_swap() {
        let dir = tempfile_dir();
        let data_a = dir.join("a.yaml");
        let data_b = dir.join("b.yaml");
        let link = dir.join("collections.yaml");
        std::fs::write(&data_a, "one").unwrap();
        std::fs::write(&data_b, "two").unwrap();
        std::os::unix::fs::symlink(&data_a, &link).unwrap();
        let watcher = Watcher::start(link.clone());
        let_it_poll(5).await;
        assert_eq!(watcher.changes(), 0, "no change, no call");
        // What the kubelet does: point the link elsewhere.
        let tmp = dir.join("new-link");
        std::os::unix::fs::symlink(&data_b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        watcher.wait_for_changes(1).await;
        // The same bytes written again are no change; different bytes are.
        std::fs::write(&data_b, "two").unwrap();
        let_it_poll(5).await;
        assert_eq!(watcher.changes(), 1, "rewriting the same bytes is no change");
        std::fs::write(&data_b, "three").unwrap();
        watcher.wait_for_changes(2).await;
        let_it_poll(5).await;
        assert_eq!(watcher.changes(), 2, "one change, one call");
        watcher.stop().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_file_is_skipped_until_it_is_back() {
        let dir = tempfile_dir();
        let path = dir.join("collections.yaml");
        std::fs::write(&path, "one").unwrap();
        let watcher = Watcher::start(path.clone());
        std::fs::remove_file(&path).unwrap();
        let_it_poll(5).await;
        assert_eq!(watcher.changes(), 0, "a missing file is no change");
        std::fs::write(&path, "one").unwrap();
        let_it_poll(5).await;
        assert_eq!(watcher.changes(), 0, "back with the same bytes: no change");
        std::fs::write(&path, "two").unwrap();
        watcher.wait_for_changes(1).await;
        watcher.stop().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("courier-file-watch-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
