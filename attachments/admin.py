from django.contrib import admin

from attachments.models import Attachment


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "user",
        "original_name",
        "mime_type",
        "size_bytes",
        "conversation",
        "created_at",
        "last_used_at",
        "expires_at",
        "delete_pending",
    ]
    list_filter = ["kind", "mime_type", "delete_pending"]
    search_fields = ["public_id", "original_name", "user__username", "conversation__session_id"]
    list_select_related = ["user", "conversation"]
    readonly_fields = [
        "public_id",
        "user",
        "conversation",
        "message",
        "storage_name",
        "original_name",
        "mime_type",
        "kind",
        "size_bytes",
        "sha256",
        "width",
        "height",
        "created_at",
        "last_used_at",
        "expires_at",
        "delete_pending",
    ]
    date_hierarchy = "created_at"

    @admin.display(description="Expires")
    def expires_at(self, obj: Attachment):
        return obj.expires_at

    def has_add_permission(self, request) -> bool:
        # Files come in through the upload API, where they are checked.
        return False
