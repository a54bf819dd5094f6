//! A small program for Orion's examples: it greets whoever is named on the command line.

fn greeting(name: &str) -> String {
    if name.trim().is_empty() {
        "Hello, world!".to_owned()
    } else {
        format!("Hello, {}!", name.trim())
    }
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    println!("{}", greeting(&name));
}

#[cfg(test)]
mod tests {
    use super::greeting;

    #[test]
    fn greets_by_name() {
        assert_eq!(greeting("Ada"), "Hello, Ada!");
    }

    #[test]
    fn greets_the_world_when_nobody_is_named() {
        assert_eq!(greeting("  "), "Hello, world!");
    }
}
