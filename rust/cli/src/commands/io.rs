//! Small files in and out: write (stdin to an inline file) and cat.

use crate::error::{CliError, Result};
use eggs_client::Client;
use eggs_protocol::EggsError;
use std::io::{Read, Write};

/// Writes everything `input` yields to a new file at `path` (replacing a file there).
/// Only small files, whose data is stored in the metadata, exist until block services do.
pub async fn write(c: &Client, path: &str, input: &mut dyn Read) -> Result<()> {
    let max = Client::MAX_SMALL_FILE;
    let mut data = Vec::new();
    input.take(max as u64 + 1).read_to_end(&mut data)?;
    if data.len() > max {
        return Err(CliError::Invalid(format!(
            "input is larger than {max} bytes, the most a small (inline) file holds; \
             larger files need block services, which do not exist yet"
        )));
    }
    c.write_small_file(path, &data).await?;
    Ok(())
}

pub async fn cat(c: &Client, path: &str, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    if id.is_dir() {
        return Err(CliError::Client(eggs_client::ClientError::Eggs {
            what: format!("cat {path}"),
            err: EggsError::IsADirectory,
        }));
    }
    let data = c.read_file(id).await?;
    out.write_all(&data)?;
    Ok(())
}
