use eggs_client::ClientError;
use eggs_protocol::EggsError;

/// Why a command failed. Displayed after `eggscli: <what>: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{}", describe_client_error(.0))]
    Client(#[from] ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The request makes no sense, found before asking any server.
    #[error("{0}")]
    Invalid(String),
    /// The cluster refused a change by the rules of who may make it (`NotPermitted`,
    /// `AccessDenied`); `why` explains from what the command knows of the inode and caller.
    #[error("{}: {why}", refused(*.err))]
    Refused { err: EggsError, why: String },
}

/// The start of a refusal's message, as `strerror` words EPERM and EACCES.
fn refused(err: EggsError) -> String {
    match err {
        EggsError::NotPermitted => "operation not permitted".into(),
        EggsError::AccessDenied => "permission denied".into(),
        other => other.to_string(),
    }
}

impl CliError {
    /// Output went to a closed pipe (`eggscli ls | head`): not worth an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

pub type Result<T> = std::result::Result<T, CliError>;

/// Errors about what the user asked for are shown alone (`no such name`); others keep the
/// client's context, which says which server and request failed.
fn describe_client_error(e: &ClientError) -> String {
    match e {
        ClientError::Eggs { err, .. } if is_user_error(*err) => err.to_string(),
        ClientError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            format!("{e} (is the cluster running? `cargo xtask run` starts one)")
        }
        _ => e.to_string(),
    }
}

fn is_user_error(err: EggsError) -> bool {
    use EggsError::*;
    matches!(
        err,
        BadName
            | NameNotFound
            | NameExists
            | DirectoryNotFound
            | FileNotFound
            | NotADirectory
            | IsADirectory
            | DirectoryNotEmpty
            | LoopInDirectoryRename
            | CannotOverrideDirectory
            | DirectoryRemoved
            | CannotRemoveRoot
            | SameName
            | BadPolicy
            | TooLarge
            | NotPermitted
            | AccessDenied
            | BadAttributes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_errors_are_short() {
        let e = CliError::from(ClientError::Eggs {
            what: "resolving /a: shard 000 Lookup".into(),
            err: EggsError::NameNotFound,
        });
        assert_eq!(e.to_string(), "no such name");
        let e = CliError::from(ClientError::Eggs {
            what: "shard 000 Lookup".into(),
            err: EggsError::InternalError,
        });
        assert_eq!(e.to_string(), "shard 000 Lookup: internal server error");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = CliError::from(ClientError::Io {
            what: "shuckle 127.0.0.1:1 Shards".into(),
            source: refused,
        });
        assert!(e.to_string().contains("is the cluster running?"));
        let e = CliError::from(ClientError::Eggs {
            what: "changing the attributes of 0x8000000000000100".into(),
            err: EggsError::NotPermitted,
        });
        assert_eq!(e.to_string(), EggsError::NotPermitted.to_string());
        let e = CliError::Refused {
            err: EggsError::NotPermitted,
            why: "only root may give /f to another user".into(),
        };
        assert_eq!(
            e.to_string(),
            "operation not permitted: only root may give /f to another user"
        );
        let pipe = CliError::Io(std::io::ErrorKind::BrokenPipe.into());
        assert!(pipe.is_broken_pipe());
    }
}
