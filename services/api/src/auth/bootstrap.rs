//! The first admin, from configuration: `COURIER_BOOTSTRAP_ADMIN=<username>` with the password in
//! `COURIER_BOOTSTRAP_ADMIN_PASSWORD_FILE` creates that user at start-up if it does not exist,
//! and grants it `admin`. An account of that name that already exists gets `admin` only if its
//! password is the configured one (an account bootstrap created has it): anyone could have
//! registered the name, and the name alone proves nothing. Until bootstrap is done the api
//! refuses registrations, so nobody can take the name first. Without the setting nobody is an
//! admin: there is no default admin and no default password. `courier-api grant-role`
//! ([`grant_role_command`]) grants any role to an existing account from the command line.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use anyhow::Context;
use courier_core::{
    auth::{ADMIN_ROLE, is_valid_role_name},
    shutdown::retry_until_ok,
};
use courier_store::Store;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use courier_store::accounts::Accounts;

use super::passwords;
use crate::config::ApiConfig;

/// The configured first admin.
pub struct BootstrapAdmin {
    username: String,
    /// The password to create the user with, when missing.
    password: Option<String>,
    /// Set once the admin is in place (readiness waits for it).
    done: Arc<AtomicBool>,
}

impl BootstrapAdmin {
    /// The configured admin, if any; refuses a malformed username, an unreadable password file
    /// or a password the registration rules would refuse.
    pub fn from_config(config: &ApiConfig) -> anyhow::Result<Option<Self>> {
        let Some(username) = &config.bootstrap_admin else { return Ok(None) };
        let username = username.trim().to_lowercase();
        anyhow::ensure!(
            super::is_valid_username(&username),
            "COURIER_BOOTSTRAP_ADMIN: '{username}' is not a valid username (3–32 of a-z, 0-9, '_', '.', '-')"
        );
        let password =
            match (&config.bootstrap_admin_password, &config.bootstrap_admin_password_file) {
                (Some(secret), _) => Some(secret.0.clone()),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!(
                            "COURIER_BOOTSTRAP_ADMIN_PASSWORD_FILE: cannot read {}",
                            path.display()
                        )
                    })?;
                    Some(text.trim_end_matches(['\r', '\n']).to_owned())
                }
                (None, None) => None,
            };
        if let Some(password) = &password
            && let Some(problem) = passwords::check_password(password, &username)
        {
            anyhow::bail!("the bootstrap admin's password {}", problem.reason);
        }
        Ok(Some(BootstrapAdmin { username, password, done: Arc::default() }))
    }

    /// The flag [`BootstrapAdmin::run`] sets when done.
    pub fn done_flag(&self) -> Arc<AtomicBool> {
        self.done.clone()
    }

    /// Grants `admin` (creating the user first if it is missing and a password is configured),
    /// retrying while the store is down.
    pub async fn run(
        self,
        accounts: &Accounts,
        hashing: &Arc<Semaphore>,
        shutdown: &CancellationToken,
    ) {
        let done = retry_until_ok(
            "setting up the bootstrap admin",
            std::time::Duration::from_secs(5),
            shutdown,
            || self.once(accounts, hashing),
        )
        .await;
        if done {
            self.done.store(true, Ordering::Release);
        }
    }

    async fn once(&self, accounts: &Accounts, hashing: &Arc<Semaphore>) -> anyhow::Result<()> {
        let Some(password) = &self.password else {
            // Nothing to create the account with, and nothing an existing one could prove.
            tracing::warn!(username = %self.username, "COURIER_BOOTSTRAP_ADMIN is set without COURIER_BOOTSTRAP_ADMIN_PASSWORD_FILE: nobody was made admin (for an existing account use `courier-api grant-role`)");
            return Ok(());
        };
        let (user, created) = match accounts.find_by_username(&self.username).await? {
            Some(user) => (user, false),
            None => {
                let hash = passwords::hash(password.clone(), hashing).await?;
                match accounts.create_user(&self.username, hash).await? {
                    Some(user) => {
                        tracing::info!(username = %self.username, "bootstrap admin created");
                        (user, true)
                    }
                    // Another replica's bootstrap created it meanwhile: check it like any other.
                    None => match accounts.find_by_username(&self.username).await? {
                        Some(user) => (user, false),
                        None => anyhow::bail!("'{}' was created and is gone again", self.username),
                    },
                }
            }
        };
        if user.roles.iter().any(|r| r == ADMIN_ROLE) {
            return Ok(());
        }
        if !created
            && !passwords::verify(password.clone(), user.password_hash.clone(), hashing).await
        {
            tracing::warn!(username = %self.username, "COURIER_BOOTSTRAP_ADMIN names an existing account whose password is not the configured one: it was NOT made admin (someone else may have registered the name; `courier-api grant-role` grants it deliberately)");
            return Ok(());
        }
        if accounts.grant_role(&self.username, ADMIN_ROLE).await?.is_some() {
            tracing::info!(username = %self.username, "bootstrap admin has the admin role");
        }
        Ok(())
    }
}

/// `courier-api grant-role --username U --role R`: adds the role to an existing user, talking to
/// the store directly. The message to print, or why it failed.
pub async fn grant_role_command(
    config: &ApiConfig,
    username: &str,
    role: &str,
) -> anyhow::Result<String> {
    let username = username.trim().to_lowercase();
    anyhow::ensure!(super::is_valid_username(&username), "'{username}' is not a valid username");
    anyhow::ensure!(
        is_valid_role_name(role),
        "'{role}' is not a role name (a lowercase letter, then lowercase letters, digits, '_' or '-')"
    );
    let store = Store::connect(
        &config.mongodb_uri,
        &config.mongodb_database,
        config.mongodb_timeout,
        "courier-api-admin",
    )
    .await
    .context("invalid MongoDB URI")?;
    let accounts = Accounts::new(&store, config.refresh_ttl, config.refresh_absolute_ttl);
    match accounts.grant_role(&username, role).await? {
        Some(user) => Ok(format!(
            "'{username}' now has the roles: {} (effective from the next login or refresh)",
            user.roles.join(", ")
        )),
        None => anyhow::bail!("no user named '{username}' (register it first)"),
    }
}
