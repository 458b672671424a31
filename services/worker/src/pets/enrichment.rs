//! Pet enrichment as a pure function of the pet: species facts from the data file shipped with
//! the worker (`data/species.json`, embedded at build time), health tips by age band and species,
//! alerts and statistics. No network; unknown species get a sensible generic answer.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

/// The species data, compiled into the binary.
const SPECIES_JSON: &str = include_str!("../../data/species.json");

#[derive(Debug, Deserialize)]
struct Data {
    version: String,
    species: HashMap<String, Species>,
    unknown: Unknown,
    general_tips: Tips,
}

#[derive(Debug, Deserialize)]
struct Species {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    group: String,
    /// `[min, max]` typical lifespan in years.
    lifespan_years: [u32; 2],
    diet: String,
    fun_fact: String,
    /// Ages below this are "young".
    young_until: u32,
    /// Ages from this on are "senior".
    senior_from: u32,
    /// Core vaccines; empty when the species is not routinely vaccinated.
    #[serde(default)]
    vaccines: Vec<String>,
    tips: Tips,
}

#[derive(Debug, Deserialize)]
struct Unknown {
    group: String,
    diet: String,
    fun_fact: String,
    young_until: u32,
    senior_from: u32,
}

#[derive(Debug, Default, Deserialize)]
struct Tips {
    #[serde(default)]
    young: Vec<String>,
    #[serde(default)]
    adult: Vec<String>,
    #[serde(default)]
    senior: Vec<String>,
}

impl Tips {
    fn for_band(&self, band: AgeCategory) -> &[String] {
        match band {
            AgeCategory::Young => &self.young,
            AgeCategory::Adult => &self.adult,
            AgeCategory::Senior => &self.senior,
            AgeCategory::Unknown => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeCategory {
    Young,
    Adult,
    Senior,
    Unknown,
}

impl AgeCategory {
    fn as_str(self) -> &'static str {
        match self {
            AgeCategory::Young => "young",
            AgeCategory::Adult => "adult",
            AgeCategory::Senior => "senior",
            AgeCategory::Unknown => "unknown",
        }
    }

    fn of(age: Option<u32>, young_until: u32, senior_from: u32) -> Self {
        match age {
            None => AgeCategory::Unknown,
            Some(age) if age < young_until => AgeCategory::Young,
            Some(age) if age >= senior_from => AgeCategory::Senior,
            Some(_) => AgeCategory::Adult,
        }
    }
}

/// The species book: facts by species key, looked up by key, name or alias, case-insensitively.
#[derive(Debug)]
pub struct SpeciesBook {
    data: Data,
    /// Normalized key, name or alias → species key.
    index: HashMap<String, String>,
}

/// The parts of a pet the enrichment reads, taken leniently from its stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct PetFacts {
    pub name: String,
    pub species: String,
    /// Whole years; `None` when missing or not a non-negative number.
    pub age: Option<u32>,
    pub vaccinated: Option<bool>,
}

impl PetFacts {
    /// Reads a pet in its api form; wrong types count as missing (never an error).
    pub fn from_document(pet: &Value) -> Self {
        let age = pet.get("age").and_then(|a| {
            a.as_u64()
                .or_else(|| a.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
        });
        PetFacts {
            name: pet.get("name").and_then(Value::as_str).unwrap_or("").to_owned(),
            species: pet.get("species").and_then(Value::as_str).unwrap_or("").to_owned(),
            age: age.map(|a| u32::try_from(a).unwrap_or(u32::MAX)),
            vaccinated: pet.get("vaccinated").and_then(Value::as_bool),
        }
    }
}

fn normalize(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl SpeciesBook {
    /// The book shipped with the worker.
    pub fn embedded() -> Result<Self, serde_json::Error> {
        Self::parse(SPECIES_JSON)
    }

    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let data: Data = serde_json::from_str(json)?;
        let mut index = HashMap::new();
        for (key, species) in &data.species {
            for name in
                std::iter::once(key).chain(std::iter::once(&species.name)).chain(&species.aliases)
            {
                index.insert(normalize(name), key.clone());
            }
        }
        Ok(SpeciesBook { data, index })
    }

    /// Version of the species data (stored in each enrichment's metadata).
    pub fn version(&self) -> &str {
        &self.data.version
    }

    /// Every species key the book knows.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.data.species.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    fn lookup(&self, species: &str) -> Option<(&str, &Species)> {
        let key = self.index.get(&normalize(species))?;
        self.data.species.get_key_value(key).map(|(k, s)| (k.as_str(), s))
    }

    /// The enrichment of `pet`: `species`, `health_tips`, `alerts` and `statistics` (the handler
    /// adds `metadata`).
    pub fn enrich(&self, pet: &PetFacts) -> Value {
        let known = self.lookup(&pet.species);
        let display_name = if pet.name.trim().is_empty() { "This pet" } else { pet.name.trim() };
        let (species, band, tips, vaccines, lifespan) = match known {
            Some((key, s)) => {
                let band = AgeCategory::of(pet.age, s.young_until, s.senior_from);
                let facts = json!({
                    "key": key,
                    "name": s.name,
                    "known": true,
                    "group": s.group,
                    "lifespan_years": {"min": s.lifespan_years[0], "max": s.lifespan_years[1]},
                    "diet": s.diet,
                    "fun_fact": s.fun_fact,
                    "vaccines": s.vaccines,
                });
                (
                    facts,
                    band,
                    s.tips.for_band(band),
                    s.vaccines.as_slice(),
                    Some((s.name.as_str(), s.lifespan_years)),
                )
            }
            None => {
                let u = &self.data.unknown;
                let band = AgeCategory::of(pet.age, u.young_until, u.senior_from);
                let name = pet.species.trim();
                let facts = json!({
                    "key": Value::Null,
                    "name": if name.is_empty() { "Unknown" } else { name },
                    "known": false,
                    "group": u.group,
                    "lifespan_years": Value::Null,
                    "diet": u.diet,
                    "fun_fact": u.fun_fact,
                    "vaccines": [],
                });
                (facts, band, &[][..], &[][..], None)
            }
        };

        let mut health_tips: Vec<String> = tips.to_vec();
        health_tips.extend(self.data.general_tips.for_band(band).iter().cloned());
        if band == AgeCategory::Unknown {
            health_tips.push("Record the pet's age to get tips for its life stage.".to_owned());
        }

        let mut alerts = Vec::new();
        match pet.vaccinated {
            Some(false) if !vaccines.is_empty() => alerts.push(json!({
                "code": "not_vaccinated",
                "severity": if band == AgeCategory::Young { "high" } else { "warning" },
                "message": format!("{display_name} is not vaccinated. Ask a vet about: {}.", vaccines.join(", ")),
            })),
            None if !vaccines.is_empty() => alerts.push(json!({
                "code": "vaccination_unknown",
                "severity": "info",
                "message": format!("{display_name}'s vaccination status is not recorded."),
            })),
            _ => {}
        }
        if let (Some(age), Some((species_name, [_, max]))) = (pet.age, lifespan)
            && age > max
        {
            alerts.push(json!({
                "code": "beyond_typical_lifespan",
                "severity": "info",
                "message": format!(
                    "At {age}, {display_name} is older than a {}'s typical {max} years: frequent check-ups help.",
                    species_name.to_lowercase()
                ),
            }));
        }
        if known.is_none() {
            alerts.push(json!({
                "code": "unknown_species",
                "severity": "info",
                "message": format!("No species facts for '{}'; general tips only.", pet.species.trim()),
            }));
        }

        let vaccination_status = match pet.vaccinated {
            Some(true) => "vaccinated",
            Some(false) => "not_vaccinated",
            None => "unknown",
        };
        let mut statistics = json!({
            "age_category": band.as_str(),
            "vaccination_status": vaccination_status,
            "tip_count": health_tips.len(),
            "alert_count": alerts.len(),
        });
        if let (Some(age), Some((_, [min, max]))) = (pet.age, lifespan) {
            let expected = f64::from(min + max) / 2.0;
            statistics["expected_years_left"] = json!((expected - f64::from(age)).max(0.0));
            statistics["life_stage_percent"] =
                json!(((f64::from(age) / expected) * 100.0).round().min(999.0));
        }

        json!({
            "species": species,
            "health_tips": health_tips,
            "alerts": alerts,
            "statistics": statistics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pet(species: &str, age: Option<u32>, vaccinated: Option<bool>) -> PetFacts {
        PetFacts { name: "Luna".into(), species: species.into(), age, vaccinated }
    }

    #[test]
    fn the_embedded_book_covers_the_required_species() {
        let book = SpeciesBook::embedded().expect("species.json parses");
        for key in ["dog", "cat", "rabbit", "hamster", "bird", "fish", "turtle", "horse"] {
            assert!(book.keys().contains(&key), "{key} missing");
            let e = book.enrich(&pet(key, Some(1), Some(true)));
            assert_eq!(e["species"]["known"], true, "{key}");
            assert!(!e["species"]["fun_fact"].as_str().unwrap().is_empty());
            assert!(e["species"]["lifespan_years"]["max"].as_u64().unwrap() > 0);
            assert!(!e["health_tips"].as_array().unwrap().is_empty(), "{key} has tips");
        }
        assert!(!book.version().is_empty());
    }

    #[test]
    fn species_match_case_insensitively_and_by_alias() {
        let book = SpeciesBook::embedded().unwrap();
        for (input, key) in [
            ("Dog", "dog"),
            ("  DOG ", "dog"),
            ("Puppy", "dog"),
            ("Guinea Pig", "guinea_pig"),
            ("guinea-pig", "guinea_pig"),
            ("Tortoise", "turtle"),
            ("budgie", "bird"),
        ] {
            assert_eq!(
                book.enrich(&pet(input, Some(3), Some(true)))["species"]["key"],
                key,
                "{input}"
            );
        }
    }

    #[test]
    fn unknown_species_get_general_tips_and_a_note() {
        let book = SpeciesBook::embedded().unwrap();
        let e = book.enrich(&pet("Axolotl", Some(2), Some(false)));
        assert_eq!(e["species"]["known"], false);
        assert_eq!(e["species"]["name"], "Axolotl");
        assert_eq!(e["species"]["key"], Value::Null);
        assert!(!e["health_tips"].as_array().unwrap().is_empty());
        let codes: Vec<&str> =
            e["alerts"].as_array().unwrap().iter().map(|a| a["code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["unknown_species"], "no vaccination alert without known vaccines");
    }

    #[test]
    fn age_bands_depend_on_the_species() {
        let book = SpeciesBook::embedded().unwrap();
        let category = |species: &str, age: u32| {
            book.enrich(&pet(species, Some(age), Some(true)))["statistics"]["age_category"].clone()
        };
        assert_eq!(category("dog", 1), "young");
        assert_eq!(category("dog", 3), "adult");
        assert_eq!(category("dog", 9), "senior");
        assert_eq!(category("hamster", 2), "senior", "a 2-year-old hamster is old");
        assert_eq!(category("turtle", 20), "adult");
    }

    #[test]
    fn unvaccinated_pets_get_an_alert_and_statistics_add_up() {
        let book = SpeciesBook::embedded().unwrap();
        let e = book.enrich(&pet("cat", Some(0), Some(false)));
        assert_eq!(e["alerts"][0]["code"], "not_vaccinated");
        assert_eq!(e["alerts"][0]["severity"], "high", "young and unvaccinated");
        assert!(e["alerts"][0]["message"].as_str().unwrap().contains("rabies"));
        assert_eq!(e["statistics"]["vaccination_status"], "not_vaccinated");
        assert_eq!(e["statistics"]["tip_count"], e["health_tips"].as_array().unwrap().len());
        assert_eq!(e["statistics"]["alert_count"], 1);

        let fish = book.enrich(&pet("fish", Some(2), Some(false)));
        assert_eq!(fish["statistics"]["alert_count"], 0, "fish are not vaccinated: no alert");

        let old = book.enrich(&pet("hamster", Some(4), Some(true)));
        assert_eq!(old["alerts"][0]["code"], "beyond_typical_lifespan");
        assert_eq!(old["statistics"]["expected_years_left"], 0.0);
    }

    #[test]
    fn malformed_pets_are_enriched_leniently() {
        let book = SpeciesBook::embedded().unwrap();
        let facts =
            PetFacts::from_document(&json!({"species": 7, "age": "old", "vaccinated": "yes"}));
        assert_eq!(
            facts,
            PetFacts { name: String::new(), species: String::new(), age: None, vaccinated: None }
        );
        let e = book.enrich(&facts);
        assert_eq!(e["statistics"]["age_category"], "unknown");
        assert_eq!(e["statistics"]["vaccination_status"], "unknown");
        assert_eq!(e["species"]["name"], "Unknown");
        assert_eq!(PetFacts::from_document(&json!({"age": 3.7})).age, Some(3));
        assert_eq!(PetFacts::from_document(&json!({"age": -1})).age, None);
    }
}
