//! The part of CEL that `x-kubernetes-validations` rules in External Secrets
//! schemas use: `has(self.f)`, `!`, `&&`, `||`, comparisons, `'k' in self`,
//! list literals, `.filter(x, x == true)` and `.size()`. A rule outside that
//! is an error, never a pass.

use serde_json::Value;

/// Evaluates `rule` with `self` bound to `object`.
pub fn check(rule: &str, object: &Value) -> Result<bool, String> {
    let tokens = tokenize(rule)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!("unsupported CEL rule `{rule}`"));
    }
    match eval(&expr, object, None)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!("rule `{rule}` gave {other:?}, not a boolean")),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Op(&'static str),
}

fn tokenize(rule: &str) -> Result<Vec<Token>, String> {
    const OPS: [&str; 16] = [
        "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ",", ".", "+",
    ];
    let mut tokens = Vec::new();
    let mut rest = rule.trim_start();
    while !rest.is_empty() {
        if let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
            tokens.push(Token::Op(op));
            rest = &rest[op.len()..];
        } else if let Some(quoted) = rest.strip_prefix('\'').or_else(|| rest.strip_prefix('"')) {
            let quote = rest.as_bytes()[0] as char;
            let end = quoted
                .find(quote)
                .ok_or_else(|| format!("unterminated string in `{rule}`"))?;
            tokens.push(Token::Str(quoted[..end].to_owned()));
            rest = &quoted[end + 1..];
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            tokens.push(Token::Int(rest[..end].parse().map_err(|e| format!("{e}"))?));
            rest = &rest[end..];
        } else if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Ident(rest[..end].to_owned()));
            rest = &rest[end..];
        } else {
            return Err(format!("unsupported CEL rule `{rule}` at `{rest}`"));
        }
        rest = rest.trim_start();
    }
    Ok(tokens)
}

#[derive(Debug)]
enum Expr {
    Has(Vec<String>),
    Field(Box<Expr>, String),
    SelfRef,
    Var,
    Lit(Cel),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
    Filter(Box<Expr>, Box<Expr>),
    Size(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
enum Cel {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Cel>),
    Json(Value),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, op: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Op(o)) if *o == op);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("expected `{op}` at token {}", self.at))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Binary("||", Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.relation()?;
        while self.eat("&&") {
            left = Expr::Binary("&&", Box::new(left), Box::new(self.relation()?));
        }
        Ok(left)
    }

    fn relation(&mut self) -> Result<Expr, String> {
        let left = self.unary()?;
        match self.peek() {
            Some(Token::Op(op @ ("==" | "!=" | "<=" | ">=" | "<" | ">"))) => {
                let op = *op;
                self.at += 1;
                Ok(Expr::Binary(op, Box::new(left), Box::new(self.unary()?)))
            }
            Some(Token::Ident(word)) if word == "in" => {
                self.at += 1;
                Ok(Expr::In(Box::new(left), Box::new(self.unary()?)))
            }
            _ => Ok(left),
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let mut expr = self.primary()?;
        while self.eat(".") {
            let Some(Token::Ident(name)) = self.peek().cloned() else {
                return Err("expected a name after `.`".to_owned());
            };
            self.at += 1;
            expr = match name.as_str() {
                "size" => {
                    self.expect("(")?;
                    self.expect(")")?;
                    Expr::Size(Box::new(expr))
                }
                "filter" => {
                    self.expect("(")?;
                    let Some(Token::Ident(_)) = self.peek() else {
                        return Err("expected a variable in filter".to_owned());
                    };
                    self.at += 1;
                    self.expect(",")?;
                    let predicate = self.or()?;
                    self.expect(")")?;
                    Expr::Filter(Box::new(expr), Box::new(predicate))
                }
                _ => Expr::Field(Box::new(expr), name),
            };
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let token = self.peek().cloned().ok_or("unexpected end of rule")?;
        self.at += 1;
        match token {
            Token::Ident(word) if word == "has" => {
                self.expect("(")?;
                let mut path = Vec::new();
                match self.peek() {
                    Some(Token::Ident(s)) if s == "self" => self.at += 1,
                    _ => return Err("has() needs a field of self".to_owned()),
                }
                while self.eat(".") {
                    let Some(Token::Ident(name)) = self.peek().cloned() else {
                        return Err("expected a field name".to_owned());
                    };
                    self.at += 1;
                    path.push(name);
                }
                self.expect(")")?;
                Ok(Expr::Has(path))
            }
            Token::Ident(word) if word == "self" => Ok(Expr::SelfRef),
            Token::Ident(word) if word == "true" => Ok(Expr::Lit(Cel::Bool(true))),
            Token::Ident(word) if word == "false" => Ok(Expr::Lit(Cel::Bool(false))),
            Token::Ident(_) => Ok(Expr::Var),
            Token::Str(s) => Ok(Expr::Lit(Cel::Str(s))),
            Token::Int(i) => Ok(Expr::Lit(Cel::Int(i))),
            Token::Op("(") => {
                let inner = self.or()?;
                self.expect(")")?;
                Ok(inner)
            }
            Token::Op("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.or()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok(Expr::List(items))
            }
            other => Err(format!("unsupported token {other:?}")),
        }
    }
}

fn eval(expr: &Expr, object: &Value, var: Option<&Cel>) -> Result<Cel, String> {
    Ok(match expr {
        Expr::Has(path) => {
            let mut node = object;
            for name in path {
                match node.get(name) {
                    Some(child) => node = child,
                    None => return Ok(Cel::Bool(false)),
                }
            }
            Cel::Bool(true)
        }
        Expr::SelfRef => Cel::Json(object.clone()),
        Expr::Var => var.cloned().ok_or("a variable outside filter()")?,
        Expr::Lit(value) => value.clone(),
        Expr::Field(inner, name) => match eval(inner, object, var)? {
            Cel::Json(value) => Cel::Json(
                value
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("no such key: {name}"))?,
            ),
            other => return Err(format!("field {name} of {other:?}")),
        },
        Expr::List(items) => Cel::List(
            items
                .iter()
                .map(|i| eval(i, object, var))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(inner) => Cel::Bool(!truth(&eval(inner, object, var)?)?),
        Expr::Binary("&&", a, b) => {
            Cel::Bool(truth(&eval(a, object, var)?)? && truth(&eval(b, object, var)?)?)
        }
        Expr::Binary("||", a, b) => {
            Cel::Bool(truth(&eval(a, object, var)?)? || truth(&eval(b, object, var)?)?)
        }
        Expr::Binary(op, a, b) => {
            let (a, b) = (eval(a, object, var)?, eval(b, object, var)?);
            let ordering = match (&a, &b) {
                (Cel::Int(x), Cel::Int(y)) => x.cmp(y),
                _ if matches!(*op, "==" | "!=") => {
                    return Ok(Cel::Bool((a == b) == (*op == "==")));
                }
                _ => return Err(format!("cannot compare {a:?} and {b:?}")),
            };
            Cel::Bool(match *op {
                "==" => ordering.is_eq(),
                "!=" => ordering.is_ne(),
                "<" => ordering.is_lt(),
                "<=" => ordering.is_le(),
                ">" => ordering.is_gt(),
                ">=" => ordering.is_ge(),
                _ => return Err(format!("unsupported operator {op}")),
            })
        }
        Expr::In(needle, haystack) => {
            let needle = eval(needle, object, var)?;
            match (needle, eval(haystack, object, var)?) {
                (Cel::Str(key), Cel::Json(Value::Object(map))) => Cel::Bool(map.contains_key(&key)),
                (item, Cel::List(items)) => Cel::Bool(items.contains(&item)),
                (a, b) => return Err(format!("{a:?} in {b:?}")),
            }
        }
        Expr::Filter(list, predicate) => {
            let Cel::List(items) = eval(list, object, var)? else {
                return Err("filter() on something not a list".to_owned());
            };
            let mut kept = Vec::new();
            for item in items {
                if truth(&eval(predicate, object, Some(&item))?)? {
                    kept.push(item);
                }
            }
            Cel::List(kept)
        }
        Expr::Size(inner) => match eval(inner, object, var)? {
            Cel::List(items) => Cel::Int(items.len() as i64),
            Cel::Json(Value::Object(map)) => Cel::Int(map.len() as i64),
            Cel::Json(Value::Array(items)) => Cel::Int(items.len() as i64),
            Cel::Str(s) | Cel::Json(Value::String(s)) => Cel::Int(s.chars().count() as i64),
            other => return Err(format!("size() of {other:?}")),
        },
    })
}

fn truth(value: &Cel) -> Result<bool, String> {
    match value {
        Cel::Bool(b) | Cel::Json(Value::Bool(b)) => Ok(*b),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::json;

    #[test]
    fn the_rules_of_upstreams_schemas_evaluate() {
        let one_of = "[has(self.a),has(self.b)].filter(x,x==true).size() == 1";
        assert_eq!(check(one_of, &json!({"a": 1})), Ok(true));
        assert_eq!(check(one_of, &json!({"a": 1, "b": 2})), Ok(false));
        assert_eq!(
            check("has(self.value) != has(self.secretRef)", &json!({})),
            Ok(false)
        );
        let reserved = "!('esoNamespace' in self) && !('esoStoreName' in self)";
        assert_eq!(check(reserved, &json!({"team": "a"})), Ok(true));
        assert_eq!(check(reserved, &json!({"esoStoreName": "a"})), Ok(false));
        assert!(check("self.matches('x')", &json!({})).is_err());
    }
}
