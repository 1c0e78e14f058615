import factory
from django.contrib.auth.models import Group

from members import services
from members.models import Member, Store, User


class StoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Store
        django_get_or_create = ["code"]

    code = factory.Sequence(lambda n: f"s{n:03d}")
    name = factory.Sequence(lambda n: f"Store {n}")
    timezone = "Asia/Shanghai"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"staff{n}@example.com")
    name = factory.Faker("name")
    is_staff = True
    password = factory.django.Password("correct-horse-battery")

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs: object) -> None:
        if create and extracted:
            self.groups.add(Group.objects.get(name=extracted))

    @factory.post_generation
    def stores(self, create: bool, extracted: list[Store] | None, **kwargs: object) -> None:
        if create and extracted:
            self.stores.set(extracted)


class MemberFactory(factory.Factory):
    """Members are enrolled through the service, as every real member is."""

    class Meta:
        model = Member

    phone = factory.Sequence(lambda n: f"+86138{n:08d}")
    email = factory.Sequence(lambda n: f"member{n}@example.com")
    name = factory.Faker("name")
    channel = Member.Channel.COUNTER

    @classmethod
    def _create(cls, model_class: type[Member], **kwargs: object) -> Member:
        return services.member_enrol(**kwargs)  # type: ignore[arg-type]

    @classmethod
    def _build(cls, model_class: type[Member], **kwargs: object) -> Member:
        raise NotImplementedError("members exist only once enrolled; use create()")
