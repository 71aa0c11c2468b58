//! The Genesys Cloud region table (PROTOCOL.md): a region name or a domain resolves to one domain.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every known region and its domain.
pub const REGIONS: &[(&str, &str)] = &[
    ("us-east-1", "mypurecloud.com"),
    ("us-east-2", "use2.us-gov-pure.cloud"),
    ("us-west-2", "usw2.pure.cloud"),
    ("ca-central-1", "cac1.pure.cloud"),
    ("sa-east-1", "sae1.pure.cloud"),
    ("mx-central-1", "mxc1.pure.cloud"),
    ("eu-west-1", "mypurecloud.ie"),
    ("eu-west-2", "euw2.pure.cloud"),
    ("eu-central-1", "mypurecloud.de"),
    ("eu-central-2", "euc2.pure.cloud"),
    ("eusc-de-east-1", "edee1.eusc-pure.cloud"),
    ("me-central-1", "mec1.pure.cloud"),
    ("ap-south-1", "aps1.pure.cloud"),
    ("ap-southeast-1", "apse1.pure.cloud"),
    ("ap-southeast-2", "mypurecloud.com.au"),
    ("ap-northeast-1", "mypurecloud.jp"),
    ("ap-northeast-2", "apne2.pure.cloud"),
    ("ap-northeast-3", "apne3.pure.cloud"),
];

/// A Genesys Cloud region: its name and its domain.
///
/// ```
/// use genesys_keepalive::Region;
/// let r: Region = "eu-west-1".parse().unwrap();
/// assert_eq!(r.api_base(), "https://api.mypurecloud.ie");
/// assert_eq!("mypurecloud.ie".parse::<Region>().unwrap(), r);
/// assert!("mars-1".parse::<Region>().unwrap_err().to_string().contains("us-east-1"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Region {
    name: &'static str,
    domain: &'static str,
}

/// An unknown region name or domain; the message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown Genesys Cloud region `{given}`; known regions: {}",
    known_regions()
)]
pub struct UnknownRegion {
    /// What was given.
    pub given: String,
}

fn known_regions() -> String {
    REGIONS
        .iter()
        .map(|(n, d)| format!("{n} ({d})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Region {
    /// us-east-1 (mypurecloud.com), the seed's default.
    pub const US_EAST_1: Region = Region {
        name: "us-east-1",
        domain: "mypurecloud.com",
    };

    /// The region's name, e.g. `eu-west-1`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The region's domain, e.g. `mypurecloud.ie`.
    pub fn domain(&self) -> &'static str {
        self.domain
    }

    /// `https://api.<domain>`: channels and subscriptions.
    pub fn api_base(&self) -> String {
        format!("https://api.{}", self.domain)
    }

    /// `https://login.<domain>`: the OAuth token endpoint's host.
    pub fn login_base(&self) -> String {
        format!("https://login.{}", self.domain)
    }
}

impl Default for Region {
    fn default() -> Self {
        Region::US_EAST_1
    }
}

impl std::str::FromStr for Region {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        REGIONS
            .iter()
            .find(|(n, d)| *n == t || *d == t)
            .map(|(name, domain)| Region { name, domain })
            .ok_or_else(|| UnknownRegion {
                given: s.to_owned(),
            })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.domain)
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
