//! Region display names, as older CloudWatch SNS messages carry them, to region codes.
//!
//! An SNS alarm message names its Region for people (`"Region": "EU (Ireland)"`); the
//! code (`eu-west-1`) is in `AlarmArn`. Older messages have no `AlarmArn`, so the ARN
//! is rebuilt from `AWSAccountId`, the Region and `AlarmName`, and the Region's code
//! comes from this table. CloudWatch's spelling changed over the years ("US - N.
//! Virginia" in 2013, "US East (N. Virginia)" later; "EU (Ireland)" before "Europe
//! (Ireland)"), so every spelling is matched after folding case, accents and
//! punctuation away.
//!
//! The regions and their current names are those of the public partitions in the AWS
//! SDKs' endpoint data (botocore 1.43 `endpoints.json`: partitions `aws`, `aws-cn`,
//! `aws-us-gov`, `aws-eusc`). A Region missing here is not an error by itself: the
//! caller falls back to the SNS topic's Region (see `parse.rs`).

/// One Region: its code, partition and every way its name has been written.
struct Region {
    code: &'static str,
    partition: &'static str,
    /// The area part of the name, old and new ("Europe", "EU").
    areas: &'static [&'static str],
    /// The place part ("Ireland"), old and new ("Osaka-Local", "Osaka").
    places: &'static [&'static str],
    /// Whole names that are not `area (place)` or `area - place`.
    others: &'static [&'static str],
}

const US_EAST: &[&str] = &["US East", "US", "US-East"];
const US_WEST: &[&str] = &["US West", "US", "US-West"];
const EUROPE: &[&str] = &["Europe", "EU"];
const ASIA_PACIFIC: &[&str] = &["Asia Pacific", "AP"];
const MIDDLE_EAST: &[&str] = &["Middle East", "ME"];

const REGIONS: &[Region] = &[
    Region {
        code: "us-east-1",
        partition: "aws",
        areas: US_EAST,
        places: &["N. Virginia", "Northern Virginia", "Virginia"],
        // S3's old name for the Region.
        others: &["US Standard"],
    },
    Region {
        code: "us-east-2",
        partition: "aws",
        areas: US_EAST,
        places: &["Ohio"],
        others: &[],
    },
    Region {
        code: "us-west-1",
        partition: "aws",
        areas: US_WEST,
        places: &["N. California", "Northern California", "California"],
        others: &[],
    },
    Region {
        code: "us-west-2",
        partition: "aws",
        areas: US_WEST,
        places: &["Oregon"],
        others: &[],
    },
    Region {
        code: "af-south-1",
        partition: "aws",
        areas: &["Africa"],
        places: &["Cape Town"],
        others: &[],
    },
    Region {
        code: "ap-east-1",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Hong Kong"],
        others: &[],
    },
    Region {
        code: "ap-east-2",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Taipei"],
        others: &[],
    },
    Region {
        code: "ap-northeast-1",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Tokyo"],
        others: &[],
    },
    Region {
        code: "ap-northeast-2",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Seoul"],
        others: &[],
    },
    Region {
        code: "ap-northeast-3",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Osaka", "Osaka-Local", "Osaka Local"],
        others: &[],
    },
    Region {
        code: "ap-south-1",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Mumbai"],
        others: &[],
    },
    Region {
        code: "ap-south-2",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Hyderabad"],
        others: &[],
    },
    Region {
        code: "ap-southeast-1",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Singapore"],
        others: &[],
    },
    Region {
        code: "ap-southeast-2",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Sydney"],
        others: &[],
    },
    Region {
        code: "ap-southeast-3",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Jakarta"],
        others: &[],
    },
    Region {
        code: "ap-southeast-4",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Melbourne"],
        others: &[],
    },
    Region {
        code: "ap-southeast-5",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Malaysia", "Kuala Lumpur"],
        others: &[],
    },
    Region {
        code: "ap-southeast-6",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["New Zealand", "Auckland"],
        others: &[],
    },
    Region {
        code: "ap-southeast-7",
        partition: "aws",
        areas: ASIA_PACIFIC,
        places: &["Thailand", "Bangkok"],
        others: &[],
    },
    Region {
        code: "ca-central-1",
        partition: "aws",
        areas: &["Canada"],
        places: &["Central", "Montreal"],
        others: &[],
    },
    Region {
        code: "ca-west-1",
        partition: "aws",
        areas: &["Canada West", "Canada"],
        places: &["Calgary"],
        others: &[],
    },
    Region {
        code: "eu-central-1",
        partition: "aws",
        areas: EUROPE,
        places: &["Frankfurt"],
        others: &[],
    },
    Region {
        code: "eu-central-2",
        partition: "aws",
        areas: EUROPE,
        places: &["Zurich"],
        others: &[],
    },
    Region {
        code: "eu-north-1",
        partition: "aws",
        areas: EUROPE,
        places: &["Stockholm"],
        others: &[],
    },
    Region {
        code: "eu-south-1",
        partition: "aws",
        areas: EUROPE,
        places: &["Milan"],
        others: &[],
    },
    Region {
        code: "eu-south-2",
        partition: "aws",
        areas: EUROPE,
        places: &["Spain", "Aragon"],
        others: &[],
    },
    Region {
        code: "eu-west-1",
        partition: "aws",
        areas: EUROPE,
        places: &["Ireland"],
        others: &[],
    },
    Region {
        code: "eu-west-2",
        partition: "aws",
        areas: EUROPE,
        places: &["London"],
        others: &[],
    },
    Region {
        code: "eu-west-3",
        partition: "aws",
        areas: EUROPE,
        places: &["Paris"],
        others: &[],
    },
    Region {
        code: "il-central-1",
        partition: "aws",
        areas: &["Israel"],
        places: &["Tel Aviv"],
        others: &[],
    },
    Region {
        code: "me-central-1",
        partition: "aws",
        areas: MIDDLE_EAST,
        places: &["UAE", "United Arab Emirates"],
        others: &[],
    },
    Region {
        code: "me-south-1",
        partition: "aws",
        areas: MIDDLE_EAST,
        places: &["Bahrain"],
        others: &[],
    },
    Region {
        code: "mx-central-1",
        partition: "aws",
        areas: &["Mexico"],
        places: &["Central", "Mexico City", "Queretaro"],
        others: &[],
    },
    Region {
        code: "sa-east-1",
        partition: "aws",
        areas: &["South America", "SA"],
        places: &["São Paulo", "Sao Paulo"],
        others: &[],
    },
    Region {
        code: "cn-north-1",
        partition: "aws-cn",
        areas: &["China"],
        places: &["Beijing"],
        others: &[],
    },
    Region {
        code: "cn-northwest-1",
        partition: "aws-cn",
        areas: &["China"],
        places: &["Ningxia"],
        others: &[],
    },
    Region {
        code: "us-gov-west-1",
        partition: "aws-us-gov",
        areas: &["AWS GovCloud", "GovCloud"],
        places: &["US-West", "US West", "US"],
        others: &[],
    },
    Region {
        code: "us-gov-east-1",
        partition: "aws-us-gov",
        areas: &["AWS GovCloud", "GovCloud"],
        places: &["US-East", "US East"],
        others: &[],
    },
    Region {
        code: "eusc-de-east-1",
        partition: "aws-eusc",
        areas: &["AWS European Sovereign Cloud", "European Sovereign Cloud"],
        places: &["Germany", "Brandenburg"],
        others: &[],
    },
];

/// A Region code with its partition (`aws`, `aws-cn`, `aws-us-gov`, `aws-eusc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionCode {
    pub code: &'static str,
    pub partition: &'static str,
}

/// Lower case, accents folded (`São` is `sao`), and only letters and digits kept, so
/// "US East (N. Virginia)" and "us east - n virginia" compare equal.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            out.push(c);
        }
    }
    out
}

/// Every spelling of a Region, folded: `area (place)`, `area - place` (both fold to
/// the same text), the other names, and the code itself (some producers write it).
fn spellings(r: &Region) -> impl Iterator<Item = String> + '_ {
    r.areas
        .iter()
        .flat_map(move |a| r.places.iter().map(move |p| fold(&format!("{a}{p}"))))
        .chain(r.others.iter().map(|o| fold(o)))
        .chain(std::iter::once(fold(r.code)))
}

/// The Region a display name (or code) names, in any spelling CloudWatch used.
pub fn region_from_display_name(name: &str) -> Option<RegionCode> {
    let wanted = fold(name);
    if wanted.is_empty() || name.len() > 200 {
        return None;
    }
    REGIONS
        .iter()
        .find(|r| spellings(r).any(|s| s == wanted))
        .map(|r| RegionCode {
            code: r.code,
            partition: r.partition,
        })
}

/// The partition of a Region code: `aws-cn` for `cn-*`, `aws-us-gov` for `us-gov-*`,
/// `aws-eusc` for `eusc-*`, `aws` otherwise (a Region too new for the table).
pub fn partition_of(region: &str) -> &'static str {
    if let Some(r) = REGIONS.iter().find(|r| r.code == region) {
        return r.partition;
    }
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("eusc-") {
        "aws-eusc"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn code(name: &str) -> Option<&'static str> {
        region_from_display_name(name).map(|r| r.code)
    }

    #[test]
    fn current_names_of_every_public_region_resolve() {
        // The `description` of each Region in botocore 1.43's endpoints.json.
        let current = [
            ("Africa (Cape Town)", "af-south-1"),
            ("Asia Pacific (Hong Kong)", "ap-east-1"),
            ("Asia Pacific (Taipei)", "ap-east-2"),
            ("Asia Pacific (Tokyo)", "ap-northeast-1"),
            ("Asia Pacific (Seoul)", "ap-northeast-2"),
            ("Asia Pacific (Osaka)", "ap-northeast-3"),
            ("Asia Pacific (Mumbai)", "ap-south-1"),
            ("Asia Pacific (Hyderabad)", "ap-south-2"),
            ("Asia Pacific (Singapore)", "ap-southeast-1"),
            ("Asia Pacific (Sydney)", "ap-southeast-2"),
            ("Asia Pacific (Jakarta)", "ap-southeast-3"),
            ("Asia Pacific (Melbourne)", "ap-southeast-4"),
            ("Asia Pacific (Malaysia)", "ap-southeast-5"),
            ("Asia Pacific (New Zealand)", "ap-southeast-6"),
            ("Asia Pacific (Thailand)", "ap-southeast-7"),
            ("Canada (Central)", "ca-central-1"),
            ("Canada West (Calgary)", "ca-west-1"),
            ("Europe (Frankfurt)", "eu-central-1"),
            ("Europe (Zurich)", "eu-central-2"),
            ("Europe (Stockholm)", "eu-north-1"),
            ("Europe (Milan)", "eu-south-1"),
            ("Europe (Spain)", "eu-south-2"),
            ("Europe (Ireland)", "eu-west-1"),
            ("Europe (London)", "eu-west-2"),
            ("Europe (Paris)", "eu-west-3"),
            ("Israel (Tel Aviv)", "il-central-1"),
            ("Middle East (UAE)", "me-central-1"),
            ("Middle East (Bahrain)", "me-south-1"),
            ("Mexico (Central)", "mx-central-1"),
            ("South America (Sao Paulo)", "sa-east-1"),
            ("US East (N. Virginia)", "us-east-1"),
            ("US East (Ohio)", "us-east-2"),
            ("US West (N. California)", "us-west-1"),
            ("US West (Oregon)", "us-west-2"),
            ("China (Beijing)", "cn-north-1"),
            ("China (Ningxia)", "cn-northwest-1"),
            ("AWS GovCloud (US-East)", "us-gov-east-1"),
            ("AWS GovCloud (US-West)", "us-gov-west-1"),
            ("AWS European Sovereign Cloud (Germany)", "eusc-de-east-1"),
        ];
        for (name, want) in current {
            assert_eq!(code(name), Some(want), "{name}");
        }
        assert_eq!(current.len(), REGIONS.len(), "a Region without a test");
    }

    #[test]
    fn old_spellings_resolve() {
        for (name, want) in [
            ("US (Virginia)", "us-east-1"),
            ("US - N. Virginia", "us-east-1"),
            ("US East - N. Virginia", "us-east-1"),
            ("US East (Northern Virginia)", "us-east-1"),
            ("US Standard", "us-east-1"),
            ("US - Oregon", "us-west-2"),
            ("US West (Northern California)", "us-west-1"),
            ("EU (Ireland)", "eu-west-1"),
            ("EU - Ireland", "eu-west-1"),
            ("EU (Frankfurt)", "eu-central-1"),
            ("EU (Milan)", "eu-south-1"),
            ("EU (Stockholm)", "eu-north-1"),
            ("Asia Pacific (Osaka-Local)", "ap-northeast-3"),
            ("Asia Pacific - Tokyo", "ap-northeast-1"),
            ("South America (São Paulo)", "sa-east-1"),
            ("South America - Sao Paulo", "sa-east-1"),
            ("AWS GovCloud (US)", "us-gov-west-1"),
            ("Mexico (Mexico City)", "mx-central-1"),
            ("  europe (IRELAND) ", "eu-west-1"),
            ("eu-west-1", "eu-west-1"),
        ] {
            assert_eq!(code(name), Some(want), "{name}");
        }
    }

    #[test]
    fn unknown_or_empty_names_resolve_to_nothing() {
        for name in ["", "()", "Mars (Olympus Mons)", "Europe", "US", "Central"] {
            assert_eq!(code(name), None, "{name}");
        }
        assert_eq!(code(&"EU (Ireland)".repeat(50)), None);
    }

    #[test]
    fn no_spelling_names_two_regions() {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for r in REGIONS {
            for s in spellings(r) {
                if let Some(other) = seen.insert(s.clone(), r.code) {
                    assert_eq!(other, r.code, "{s:?} names {other} and {}", r.code);
                }
            }
        }
    }

    #[test]
    fn partitions_of_regions() {
        assert_eq!(
            region_from_display_name("China (Ningxia)").map(|r| r.partition),
            Some("aws-cn")
        );
        assert_eq!(partition_of("us-gov-east-1"), "aws-us-gov");
        assert_eq!(partition_of("cn-north-9"), "aws-cn");
        assert_eq!(partition_of("eusc-de-east-1"), "aws-eusc");
        assert_eq!(partition_of("eu-west-1"), "aws");
        assert_eq!(partition_of("xx-new-1"), "aws");
    }
}
