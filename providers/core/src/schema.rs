//! Resource schemas: the attributes and nested blocks a resource type
//! accepts, which are computed, which are sensitive and which force
//! replacement. The engine validates configuration and plans changes from
//! these; providers declare them.

/// The type of an attribute's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    /// A string.
    String,
    /// A number.
    Number,
    /// A boolean.
    Bool,
    /// A list of strings.
    ListOfString,
    /// A map of strings.
    MapOfString,
    /// Anything.
    Any,
}

impl AttrType {
    /// The name shown to users in type errors.
    pub fn describe(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Bool => "bool",
            Self::ListOfString => "list(string)",
            Self::MapOfString => "map(string)",
            Self::Any => "any",
        }
    }
}

/// One attribute of a resource or block.
#[derive(Clone, Debug)]
pub struct AttrSchema {
    /// Attribute name.
    pub name: &'static str,
    /// Value type.
    pub ty: AttrType,
    /// Must be set in configuration.
    pub required: bool,
    /// Set by the provider (possibly also settable: `optional` + `computed`).
    pub computed: bool,
    /// May be set in configuration.
    pub optional: bool,
    /// Never shown or stored in plain text.
    pub sensitive: bool,
    /// A change replaces the object instead of updating it in place.
    pub force_new: bool,
    /// The value used when the configuration leaves the attribute out, as
    /// JSON text (`"1"`, `"\"no\""`, `"true"`). The engine fills it in
    /// before planning, so state and plans always show it.
    pub default: Option<&'static str>,
}

impl AttrSchema {
    const fn base(name: &'static str, ty: AttrType) -> Self {
        Self {
            name,
            ty,
            required: false,
            computed: false,
            optional: false,
            sensitive: false,
            force_new: false,
            default: None,
        }
    }
    /// A required attribute.
    pub const fn required(name: &'static str, ty: AttrType) -> Self {
        let mut a = Self::base(name, ty);
        a.required = true;
        a
    }
    /// An optional attribute.
    pub const fn optional(name: &'static str, ty: AttrType) -> Self {
        let mut a = Self::base(name, ty);
        a.optional = true;
        a
    }
    /// A read-only attribute set by the provider.
    pub const fn computed(name: &'static str, ty: AttrType) -> Self {
        let mut a = Self::base(name, ty);
        a.computed = true;
        a
    }
    /// Marks the attribute as forcing replacement when it changes.
    pub const fn force_new(mut self) -> Self {
        self.force_new = true;
        self
    }
    /// Marks the attribute as sensitive.
    pub const fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
    /// Sets the default, as JSON text.
    pub const fn default(mut self, json: &'static str) -> Self {
        self.default = Some(json);
        self
    }
    /// Marks an optional attribute as also computed (the provider fills it
    /// when the configuration leaves it out).
    pub const fn and_computed(mut self) -> Self {
        self.computed = true;
        self
    }
}

/// How many times a nested block may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    /// At most once; the value is one object.
    Single,
    /// Any number of times; the value is a list of objects.
    List,
}

/// A nested block, e.g. `ports { ... }` in `docker_container`.
#[derive(Clone, Debug)]
pub struct BlockSchema {
    /// Block type name.
    pub name: &'static str,
    /// Once or many.
    pub nesting: Nesting,
    /// A change of anything inside replaces the resource.
    pub force_new: bool,
    /// Attributes inside the block.
    pub attributes: Vec<AttrSchema>,
    /// Blocks inside the block.
    pub blocks: Vec<BlockSchema>,
}

/// Everything berth knows about one resource type.
#[derive(Clone, Debug)]
pub struct ResourceSchema {
    /// Resource type, e.g. `docker_container`.
    pub type_name: &'static str,
    /// Top-level attributes.
    pub attributes: Vec<AttrSchema>,
    /// Top-level nested blocks.
    pub blocks: Vec<BlockSchema>,
}

impl ResourceSchema {
    /// Looks up a top-level attribute.
    pub fn attribute(&self, name: &str) -> Option<&AttrSchema> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// Looks up a top-level block.
    pub fn block(&self, name: &str) -> Option<&BlockSchema> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// Whether a change of the top-level attribute or block `name` forces
    /// replacement.
    pub fn forces_replacement(&self, name: &str) -> bool {
        self.attribute(name).map(|a| a.force_new).unwrap_or(false)
            || self.block(name).map(|b| b.force_new).unwrap_or(false)
    }

    /// Whether the top-level attribute `name` is sensitive.
    pub fn is_sensitive(&self, name: &str) -> bool {
        self.attribute(name).map(|a| a.sensitive).unwrap_or(false)
    }
}
