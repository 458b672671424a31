//! Presence of one room as this broadcaster sees it: its own users (with a connection count and
//! a grace period after the last one goes) merged with every other broadcaster's entries (each
//! with a TTL refreshed by heartbeats). It counts users, not connections, and reports who
//! joined and left whenever the merged set changes. Pure state: time is passed in.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use courier_core::chat_live::{ChatUser, MAX_PRESENCE_USERS_PER_SIGNAL, PresenceSignal};

/// Who arrived and who left with one change (either may be empty).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub joined: Vec<ChatUser>,
    pub left: Vec<ChatUser>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

/// A user with at least one subscription to the room on this broadcaster (or one that ended
/// less than the grace period ago).
#[derive(Debug)]
struct Local {
    user: ChatUser,
    connections: u32,
    /// Identifies this entry: a seat of an entry that was revoked and created again must not
    /// count against the new one.
    epoch: u64,
    /// Set when the last connection went: the entry ends then, unless the user comes back.
    grace_until: Option<Instant>,
}

/// A user other broadcasters report, with when each one's entry expires.
#[derive(Debug)]
struct Remote {
    user: ChatUser,
    nodes: HashMap<Arc<str>, Instant>,
}

#[derive(Debug, Default)]
pub struct Presence {
    local: HashMap<String, Local>,
    remote: HashMap<String, Remote>,
    /// Users just removed from the room: other broadcasters' heartbeats naming them are ignored
    /// until then, so a heartbeat sent just before the removal reached them cannot bring the
    /// user back for a moment.
    tombstones: HashMap<String, Instant>,
}

/// What [`Presence::connect`] did.
#[derive(Debug)]
pub struct Connected {
    pub epoch: u64,
    pub diff: Diff,
    /// The user had no entry on this broadcaster: announce them to the others now.
    pub new_here: bool,
}

impl Presence {
    fn present(&self, id: &str) -> bool {
        self.local.contains_key(id) || self.remote.contains_key(id)
    }

    fn user(&self, id: &str) -> Option<&ChatUser> {
        self.local.get(id).map(|l| &l.user).or_else(|| self.remote.get(id).map(|r| &r.user))
    }

    /// A connection of `user` subscribed here. `epoch` is the id the entry gets if it is new.
    pub fn connect(&mut self, user: &ChatUser, epoch: u64) -> Connected {
        let was = self.present(&user.id);
        self.tombstones.remove(&user.id);
        let (epoch, new_here) = match self.local.get_mut(&user.id) {
            Some(local) => {
                local.connections += 1;
                local.grace_until = None;
                local.user.username.clone_from(&user.username);
                (local.epoch, false)
            }
            None => {
                let local = Local { user: user.clone(), connections: 1, epoch, grace_until: None };
                self.local.insert(user.id.clone(), local);
                (epoch, true)
            }
        };
        let diff =
            if was { Diff::default() } else { Diff { joined: vec![user.clone()], left: vec![] } };
        Connected { epoch, diff, new_here }
    }

    /// A connection of `user_id` admitted under `epoch` ended; the user stays present for
    /// `grace` after their last one (a quick reconnect, here or elsewhere, shows no change).
    pub fn disconnect(&mut self, user_id: &str, epoch: u64, now: Instant, grace: Duration) {
        if let Some(local) = self.local.get_mut(user_id)
            && local.epoch == epoch
        {
            local.connections = local.connections.saturating_sub(1);
            if local.connections == 0 {
                local.grace_until = Some(now + grace);
            }
        }
    }

    /// Whether `user_id` holds an entry admitted under `epoch` (false once revoked).
    pub fn holds(&self, user_id: &str, epoch: u64) -> bool {
        self.local.get(user_id).is_some_and(|l| l.epoch == epoch)
    }

    /// Whether `user_id` was admitted here and not removed since (the membership cache).
    pub fn is_local(&self, user_id: &str) -> bool {
        self.local.contains_key(user_id)
    }

    /// `user_id` was removed from the room: gone at once, everywhere; other broadcasters'
    /// entries for them are ignored for `tombstone`. Returns whether they were local here.
    pub fn remove_user(
        &mut self,
        user_id: &str,
        now: Instant,
        tombstone: Duration,
    ) -> (Diff, bool) {
        let user = self.user(user_id).cloned();
        let was_local = self.local.remove(user_id).is_some();
        self.remote.remove(user_id);
        self.tombstones.insert(user_id.to_owned(), now + tombstone);
        let diff = match user {
            Some(user) => Diff { joined: vec![], left: vec![user] },
            None => Diff::default(),
        };
        (diff, was_local)
    }

    /// Applies another broadcaster's signal.
    pub fn apply(&mut self, node: &Arc<str>, signal: &PresenceSignal, now: Instant) -> Diff {
        let mut diff = Diff::default();
        let until = now + signal.ttl();
        for user in signal.present.iter().take(MAX_PRESENCE_USERS_PER_SIGNAL) {
            if self.tombstones.get(&user.id).is_some_and(|t| *t > now) {
                continue;
            }
            let was = self.present(&user.id);
            let remote = self
                .remote
                .entry(user.id.clone())
                .or_insert_with(|| Remote { user: user.clone(), nodes: HashMap::new() });
            remote.user.username.clone_from(&user.username);
            remote.nodes.insert(node.clone(), until);
            if !was {
                diff.joined.push(user.clone());
            }
        }
        for id in signal.left.iter().take(MAX_PRESENCE_USERS_PER_SIGNAL) {
            self.drop_remote_entry(id, node, &mut diff);
        }
        diff
    }

    fn drop_remote_entry(&mut self, id: &str, node: &Arc<str>, diff: &mut Diff) {
        let Some(remote) = self.remote.get_mut(id) else { return };
        remote.nodes.remove(node);
        if remote.nodes.is_empty() {
            let user = self.remote.remove(id).expect("just seen").user;
            if !self.local.contains_key(id) {
                diff.left.push(user);
            }
        }
    }

    /// Ends what is due at `now`: local entries past their grace (returned, to announce them
    /// gone) and remote entries past their TTL.
    pub fn expire(&mut self, now: Instant) -> (Diff, Vec<String>) {
        let mut diff = Diff::default();
        let gone: Vec<String> = self
            .local
            .iter()
            .filter(|(_, l)| l.grace_until.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            let local = self.local.remove(id).expect("just seen");
            if !self.remote.contains_key(id) {
                diff.left.push(local.user);
            }
        }
        let mut emptied = Vec::new();
        for (id, remote) in &mut self.remote {
            remote.nodes.retain(|_, until| *until > now);
            if remote.nodes.is_empty() {
                emptied.push(id.clone());
            }
        }
        for id in emptied {
            let user = self.remote.remove(&id).expect("just seen").user;
            if !self.local.contains_key(&id) {
                diff.left.push(user);
            }
        }
        self.tombstones.retain(|_, until| *until > now);
        (diff, gone)
    }

    /// Everyone present, sorted by username then id.
    pub fn users(&self) -> Vec<ChatUser> {
        let mut users: Vec<ChatUser> = self
            .local
            .values()
            .map(|l| l.user.clone())
            .chain(
                self.remote
                    .iter()
                    .filter(|(id, _)| !self.local.contains_key(*id))
                    .map(|(_, r)| r.user.clone()),
            )
            .collect();
        users.sort_by(|a, b| (&a.username, &a.id).cmp(&(&b.username, &b.id)));
        users
    }

    /// This broadcaster's own users (what its heartbeats name), grace periods included.
    pub fn local_users(&self) -> Vec<ChatUser> {
        self.local.values().map(|l| l.user.clone()).collect()
    }

    pub fn local_user_count(&self) -> usize {
        self.local.len()
    }

    pub fn local_connections(&self) -> u64 {
        self.local.values().map(|l| u64::from(l.connections)).sum()
    }

    /// No user of this broadcaster is in the room (it can stop following it).
    pub fn is_idle(&self) -> bool {
        self.local.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(3);

    fn user(id: &str) -> ChatUser {
        ChatUser { id: id.into(), username: format!("name-{id}") }
    }

    fn signal(present: &[&str], left: &[&str], ttl_ms: u64) -> PresenceSignal {
        PresenceSignal {
            node: "other".into(),
            present: present.iter().map(|id| user(id)).collect(),
            left: left.iter().map(|id| (*id).to_owned()).collect(),
            ttl_ms,
            sync: false,
        }
    }

    fn ids(users: &[ChatUser]) -> Vec<&str> {
        users.iter().map(|u| u.id.as_str()).collect()
    }

    #[test]
    fn two_tabs_are_one_user_and_the_last_leaving_starts_the_grace() {
        let (mut p, t0) = (Presence::default(), Instant::now());
        let first = p.connect(&user("a"), 1);
        assert_eq!((ids(&first.diff.joined), first.new_here), (vec!["a"], true));
        let second = p.connect(&user("a"), 2);
        assert!(second.diff.is_empty() && !second.new_here);
        assert_eq!(second.epoch, 1, "the second tab shares the entry");
        assert_eq!((p.users().len(), p.local_connections()), (1, 2));

        p.disconnect("a", 1, t0, GRACE);
        assert_eq!(p.expire(t0 + GRACE * 2), (Diff::default(), vec![]), "one tab is still open");
        p.disconnect("a", 1, t0, GRACE);
        assert_eq!(p.expire(t0 + GRACE / 2).0, Diff::default(), "within the grace");
        let (diff, gone) = p.expire(t0 + GRACE);
        assert_eq!((ids(&diff.left), gone), (vec!["a"], vec!["a".to_owned()]));
        assert!(p.is_idle());
    }

    #[test]
    fn a_reconnect_within_the_grace_changes_nothing() {
        let (mut p, t0) = (Presence::default(), Instant::now());
        p.connect(&user("a"), 1);
        p.disconnect("a", 1, t0, GRACE);
        let back = p.connect(&user("a"), 2);
        assert!(back.diff.is_empty() && !back.new_here);
        assert_eq!(p.expire(t0 + GRACE * 10), (Diff::default(), vec![]));
    }

    #[test]
    fn remote_entries_merge_by_user_and_expire_by_ttl() {
        let (mut p, t0) = (Presence::default(), Instant::now());
        let (b, c): (Arc<str>, Arc<str>) = ("b".into(), "c".into());
        p.connect(&user("a"), 1);
        let diff = p.apply(&b, &signal(&["a", "x"], &[], 15_000), t0);
        assert_eq!(ids(&diff.joined), vec!["x"], "a is already here");
        assert!(p.apply(&c, &signal(&["x"], &[], 5_000), t0).is_empty(), "x on two nodes");
        assert_eq!(ids(&p.users()), vec!["a", "x"]);
        assert_eq!(p.expire(t0 + Duration::from_secs(6)).0, Diff::default(), "b still has x");
        let (diff, _) = p.expire(t0 + Duration::from_secs(15));
        assert_eq!(ids(&diff.left), vec!["x"]);
        // A heartbeat refreshes: an entry lasts a TTL from its last signal.
        p.apply(&b, &signal(&["y"], &[], 15_000), t0);
        p.apply(&b, &signal(&["y"], &[], 15_000), t0 + Duration::from_secs(10));
        assert!(p.expire(t0 + Duration::from_secs(20)).0.is_empty());
        assert_eq!(ids(&p.expire(t0 + Duration::from_secs(25)).0.left), vec!["y"]);
    }

    #[test]
    fn left_removes_one_nodes_entry_and_a_remote_leave_of_a_local_user_shows_nothing() {
        let (mut p, t0) = (Presence::default(), Instant::now());
        let b: Arc<str> = "b".into();
        p.apply(&b, &signal(&["x", "a"], &[], 15_000), t0);
        p.connect(&user("a"), 1);
        let diff = p.apply(&b, &signal(&[], &["x", "a", "never-seen"], 15_000), t0);
        assert_eq!((ids(&diff.left), diff.joined.len()), (vec!["x"], 0));
        assert_eq!(ids(&p.users()), vec!["a"]);
    }

    #[test]
    fn a_removed_user_goes_at_once_and_stale_heartbeats_do_not_bring_them_back() {
        let (mut p, t0) = (Presence::default(), Instant::now());
        let b: Arc<str> = "b".into();
        p.connect(&user("a"), 7);
        p.apply(&b, &signal(&["a"], &[], 15_000), t0);
        let (diff, was_local) = p.remove_user("a", t0, Duration::from_secs(5));
        assert_eq!((ids(&diff.left), was_local), (vec!["a"], true));
        assert!(!p.holds("a", 7) && !p.is_local("a"));
        assert!(p.apply(&b, &signal(&["a"], &[], 15_000), t0 + Duration::from_secs(1)).is_empty());
        assert!(p.users().is_empty());
        // A seat of the revoked entry leaving does not touch a new entry.
        let again = p.connect(&user("a"), 8);
        assert_eq!((ids(&again.diff.joined), again.epoch), (vec!["a"], 8));
        p.disconnect("a", 7, t0, GRACE);
        assert!(p.expire(t0 + GRACE * 2).0.is_empty(), "the stale seat did not start a grace");
        // After the tombstone, remote entries count again.
        p.remove_user("a", t0, Duration::from_secs(5));
        p.expire(t0 + Duration::from_secs(6));
        let diff = p.apply(&b, &signal(&["a"], &[], 15_000), t0 + Duration::from_secs(6));
        assert_eq!(ids(&diff.joined), vec!["a"]);
    }

    #[test]
    fn a_shortened_ttl_on_shutdown_ends_entries_sooner() {
        let (mut p, t0) = (Presence::default(), Instant::now());
        let b: Arc<str> = "b".into();
        p.apply(&b, &signal(&["x"], &[], 15_000), t0);
        p.apply(&b, &signal(&["x"], &[], 3_000), t0);
        assert_eq!(ids(&p.expire(t0 + Duration::from_secs(3)).0.left), vec!["x"]);
    }
}
