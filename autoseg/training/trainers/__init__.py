"""Trainer variants, one file each: ``@register_trainer("name")`` on a subclass of
:class:`autoseg.training.trainer.Trainer` overriding the hooks it changes. Every module here
is imported the first time a trainer is looked up, so a new file needs no other edit
(documentation/extending.md). The base trainer is registered as ``default``."""
