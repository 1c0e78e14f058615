"""Fields merchants write once per language (en, 简体, 繁體, 한국어), via django-modeltranslation."""

from modeltranslation.translator import TranslationOptions, register

from rewards.models import Reward, StampProgramme, Tier


@register(Tier)
class TierTranslation(TranslationOptions):
    fields = ("name", "perks")


@register(Reward)
class RewardTranslation(TranslationOptions):
    fields = ("title", "description")


@register(StampProgramme)
class StampProgrammeTranslation(TranslationOptions):
    fields = ("name",)
