//! Just enough RESP to ask the bench's private redis-server whether it is up,
//! how much it holds and how many commands it ran: one command per
//! connection, simple replies only.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest one command may take, connection included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A reply: the text of a simple string, bulk string or integer.
async fn command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    timeout(COMMAND_TIMEOUT, async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at_checked(1).context("empty reply")?;
        match kind {
            "+" | ":" => Ok(rest.to_owned()),
            "$" => {
                let len: usize = rest.parse().with_context(|| format!("bulk length {rest:?}"))?;
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body).await?;
                body.truncate(len);
                Ok(String::from_utf8(body)?)
            }
            "-" => bail!("redis error: {rest}"),
            _ => bail!("unexpected reply {line:?}"),
        }
    })
    .await
    .context("redis command timed out")?
}

/// Whether the server answers `PING` with `PONG`.
pub async fn ping(port: u16) -> bool {
    command(port, &["PING"]).await.is_ok_and(|r| r == "PONG")
}

/// The value of `name:` in an `INFO` reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Commands one [`Counters::of`] sends, which the next reading counts.
pub const COUNTER_COMMANDS: u64 = 3;

/// Counters read before and after a slice of load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Commands run so far: the `calls` of every `INFO commandstats` line.
    pub commands: u64,
    /// `INFO memory` `used_memory`, bytes.
    pub used_memory: u64,
    /// `DBSIZE`.
    pub keys: u64,
}

impl Counters {
    /// Reads them ([`COUNTER_COMMANDS`] commands).
    pub async fn of(port: u16) -> anyhow::Result<Counters> {
        let stats = command(port, &["INFO", "commandstats"]).await?;
        let commands = stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter_map(|l| l.split_once("calls=")?.1.split(',').next()?.parse::<u64>().ok())
            .sum();
        let memory = command(port, &["INFO", "memory"]).await?;
        let used_memory = info_field(&memory, "used_memory")
            .context("INFO memory without used_memory")?
            .parse()?;
        let keys = command(port, &["DBSIZE"]).await?.parse()?;
        Ok(Counters {
            commands,
            used_memory,
            keys,
        })
    }
}

/// What the server holds after the run.
#[derive(Clone, Debug)]
pub struct RedisStats {
    /// `INFO memory` `used_memory_human`.
    pub used_memory: String,
    /// `INFO memory` `used_memory_peak_human`.
    pub used_memory_peak: String,
    /// `DBSIZE`: keys in the database.
    pub keys: u64,
}

impl RedisStats {
    /// Reads the figures; `None` if the server does not answer.
    pub async fn of(port: u16) -> Option<RedisStats> {
        let info = command(port, &["INFO", "memory"]).await.ok()?;
        let field = |name: &str| info_field(&info, name).map(str::to_owned);
        Some(RedisStats {
            used_memory: field("used_memory_human")?,
            used_memory_peak: field("used_memory_peak_human")?,
            keys: command(port, &["DBSIZE"]).await.ok()?.parse().ok()?,
        })
    }
}
