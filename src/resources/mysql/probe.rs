//! The MySQL readiness probe: "running" means a client can log in and get an answer.
//!
//! A mysqld process that exists is not yet a database that serves: it may still be replaying its
//! redo log, or be wedged. So the MySQL agent calls a server ready only when a connection with the
//! configured user and password succeeds and `SELECT 1` returns 1, within a deadline. The probe
//! says *why* it failed, because the answer differs: nothing listening (not up yet, or down),
//! credentials refused (a config error no waiting will fix), or something else.

use mysql_async::prelude::Queryable;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket path.
    Socket(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Socket(path) => write!(f, "socket {}", path.display()),
        }
    }
}

/// Why a probe did not get an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Nothing accepted the connection (not listening, refused, no socket file).
    #[error("nothing answers on {endpoint}: {message}")]
    Unreachable {
        /// Where it tried.
        endpoint: String,
        /// The operating system's reason.
        message: String,
    },
    /// The server answered but refused the login: fix `user`/`password`, waiting will not help.
    #[error("{endpoint} refuses user {user}: {message}; fix user/password in the config")]
    Refused {
        /// Where it tried.
        endpoint: String,
        /// The configured user.
        user: String,
        /// The server's message.
        message: String,
    },
    /// No full answer within the deadline (a wedged or very busy server, or not a MySQL server).
    #[error("no answer from {endpoint} within {timeout:?}")]
    Timeout {
        /// Where it tried.
        endpoint: String,
        /// The deadline.
        timeout: Duration,
    },
    /// Anything else the server or the driver said.
    #[error("{endpoint}: {message}")]
    Other {
        /// Where it tried.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

/// MySQL error codes for refused logins: access denied, no access to the database, no plugin.
const LOGIN_REFUSED: &[u16] = &[1044, 1045, 1698, 1251, 1524];

/// Connects to `endpoint` as `user`, runs `SELECT 1` and checks the answer, within `timeout`.
pub async fn probe(
    endpoint: &Endpoint,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let mut opts = mysql_async::OptsBuilder::default()
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    opts = match endpoint {
        Endpoint::Tcp { host, port } => opts.ip_or_hostname(host.clone()).tcp_port(*port),
        Endpoint::Socket(path) => opts.socket(Some(path.to_string_lossy().into_owned())),
    };
    let name = endpoint.to_string();
    let attempt = async {
        let mut conn = mysql_async::Conn::new(opts).await?;
        let answer: Option<i64> = conn.query_first("SELECT 1").await?;
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(answer)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(ProbeError::Timeout {
            endpoint: name,
            timeout,
        }),
        Ok(Ok(Some(1))) => Ok(()),
        Ok(Ok(other)) => Err(ProbeError::Other {
            endpoint: name,
            message: format!("SELECT 1 answered {other:?}"),
        }),
        Ok(Err(mysql_async::Error::Server(e))) if LOGIN_REFUSED.contains(&e.code) => {
            Err(ProbeError::Refused {
                endpoint: name,
                user: user.to_string(),
                message: e.message,
            })
        }
        Ok(Err(mysql_async::Error::Io(e))) => Err(ProbeError::Unreachable {
            endpoint: name,
            message: e.to_string(),
        }),
        Ok(Err(e)) => Err(ProbeError::Other {
            endpoint: name,
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_listener_times_out() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let err = probe(&endpoint, "u", "p", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Unreachable { .. }), "{err}");

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: silent.local_addr().unwrap().port(),
        };
        let err = probe(&endpoint, "u", "p", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");

        let missing = Endpoint::Socket("/nonexistent/quorate/mysqld.sock".into());
        let err = probe(&missing, "u", "p", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Unreachable { .. }), "{err}");
    }
}
