//! Changing the namespace: mkdir, mv, rm, rmdir.

use super::{join, last_name};
use crate::error::Result;
use eggs_client::Client;
use eggs_protocol::EggsError;

pub async fn mkdir(c: &Client, path: &str, parents: bool) -> Result<()> {
    if parents {
        c.mkdir_p(path).await?;
    } else {
        c.mkdir(path).await?;
    }
    Ok(())
}

/// Renames `src` to `dst`, or moves it into `dst` when that is an existing directory (as
/// `mv` does).
pub async fn mv(c: &Client, src: &str, dst: &str) -> Result<()> {
    let dst = match c.resolve(dst).await {
        Ok(id) if id.is_dir() => join(dst, last_name(src)?),
        Ok(_) => dst.to_string(),
        Err(e) if e.eggs() == Some(EggsError::NameNotFound) => dst.to_string(),
        Err(e) => return Err(e.into()),
    };
    c.rename(src, &dst).await?;
    Ok(())
}

pub async fn rm(c: &Client, path: &str) -> Result<()> {
    c.unlink(path).await?;
    Ok(())
}

pub async fn rmdir(c: &Client, path: &str) -> Result<()> {
    c.rmdir(path).await?;
    Ok(())
}
