"""A checkpoint's stored gin config is data: it may bind the project's registered configurables
and nothing else.

gin is a small programming language: `from __gin__ import dynamic_registration` plus
`import os` makes `@os.system()` callable, and `include` reads any file. That is right for the
recipes a user types or picks (tools/train.py --gin: as expressive as gin is), and wrong for text
that arrived inside a downloaded checkpoint, which tools/eval.py, export.py, visualize.py and
`from_checkpoint` parse to rebuild the model. So such text is parsed statement by statement
first, without running anything, and refused unless every statement is a binding of a
configurable registered by unimask or its adapters (or a gin macro), and every `@reference` in
a value names one too.
"""
from __future__ import annotations

import inspect

import gin
from gin import config as gin_config
from gin import config_parser

# gin's own configurables that only name or hold values (macros, singletons of other configurables)
GIN_BUILTINS = ("gin.macro", "gin.singleton", "gin.constant")
PROJECT_PACKAGES = ("unimask", "modalities")


class UnsafeConfigError(ValueError):
    """The stored config holds something other than bindings of the project's configurables."""


class _RecordReferences(config_parser.ParserDelegate):
    """Collects every @reference and %macro of the parsed values instead of resolving them."""

    def __init__(self):
        self.references = []

    def configurable_reference(self, scoped_configurable_name, evaluate):
        self.references.append(scoped_configurable_name)
        return scoped_configurable_name

    def macro(self, macro_name):
        return macro_name


def is_project_configurable(selector: str) -> bool:
    """Is `selector` (maybe scoped: 'scope/Name') registered by the project or one of gin's builtins?"""
    name = selector.rsplit("/", 1)[-1]
    try:
        match = gin_config._REGISTRY.get_match(name)
    except ValueError:  # an ambiguous short name: a real configurable, but say which one
        return False
    if match is None:
        return False
    return match.selector in GIN_BUILTINS or match.module.split(".")[0] in PROJECT_PACKAGES


OPT_INS = ("trust_pickle", "init_trust_pickle")  # bindings that let a full unpickle through


def reset_safety_bindings(text: str) -> list:
    """After a stored config is parsed: every binding in it that opts in to a full unpickle
    (`*.trust_pickle`, `train.init_trust_pickle`) or moves a dataset's size limit (`max_*` of a
    SampleDataset) is bound back to its default, so only the user's own --gin / --gin_param can
    set them. -> the bindings reset ('GraphDataset.trust_pickle', ...), for a note."""
    from unimask.data import SampleDataset

    reset = []
    for statement in config_parser.ConfigParser(text, _RecordReferences()):
        if not isinstance(statement, config_parser.BindingStatement) or not statement.arg_name:
            continue
        match = gin_config._REGISTRY.get_match(statement.selector.rsplit("/", 1)[-1])
        limit = statement.arg_name.startswith("max_") and inspect.isclass(match.wrapped) and \
            issubclass(match.wrapped, SampleDataset)
        if statement.arg_name in OPT_INS or limit:
            key = (f"{statement.scope}/" if statement.scope else "") + f"{statement.selector}.{statement.arg_name}"
            signature = inspect.signature(match.wrapped)  # gin: the configurable's declared default
            gin.bind_parameter(key, signature.parameters[statement.arg_name].default)
            reset.append(key)
    return reset


def check_stored_config(text: str, where: str):
    """Raise UnsafeConfigError naming `where` (the checkpoint) and the line unless `text` only binds
    the project's registered configurables. Call after the configurables are registered."""
    delegate = _RecordReferences()
    try:
        statements = list(config_parser.ConfigParser(text, delegate))
    except SyntaxError as err:
        raise UnsafeConfigError(f"{where}: the stored gin config does not parse ({err})") from err
    for statement in statements:
        line = f"line {statement.location.line_num}: {statement.location.line_content.strip()!r}"
        if isinstance(statement, config_parser.ImportStatement):
            raise UnsafeConfigError(f"{where}: the stored gin config imports a module ({line}); a checkpoint's config "
                                    "may only bind unimask's configurables, so it is refused")
        if isinstance(statement, config_parser.IncludeStatement):
            raise UnsafeConfigError(f"{where}: the stored gin config includes another file ({line}); a checkpoint's "
                                    "config may only bind unimask's configurables, so it is refused")
        if not isinstance(statement, config_parser.BindingStatement):
            raise UnsafeConfigError(f"{where}: the stored gin config holds a {type(statement).__name__} ({line}); "
                                    "only bindings are accepted")
        if statement.selector and not statement.arg_name:
            continue  # a macro definition: NAME = value (its value's references are checked below)
        if not is_project_configurable(statement.selector):
            raise UnsafeConfigError(f"{where}: the stored gin config binds {statement.selector!r}, which is not one of "
                                    f"unimask's registered configurables ({line}); refused")
    for reference in delegate.references:
        if not is_project_configurable(reference):
            raise UnsafeConfigError(f"{where}: the stored gin config calls @{reference}, which is not one of "
                                    "unimask's registered configurables; refused")
