from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from integrations import services
from integrations.models import McpServer, McpTool


class McpServerForm(forms.ModelForm):
    # Write-only: the stored secret is never put back into the page.
    bearer_token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Sent as 'Authorization: Bearer …'. Leave empty to keep the stored one.",
    )
    clear_bearer_token = forms.BooleanField(required=False)

    class Meta:
        model = McpServer
        fields = [
            "server_id", "name", "transport", "url", "command", "args", "env", "enabled",
            "approval_policy", "connect_timeout", "call_timeout", "headers", "disabled_tools",
        ]  # fmt: skip

    def clean(self):
        data = super().clean() or {}
        transport = data.get("transport")
        if transport == McpServer.Transport.STDIO and not data.get("command"):
            self.add_error("command", "A stdio server needs a command.")
        if transport != McpServer.Transport.STDIO and not data.get("url"):
            self.add_error("url", "An HTTP server needs a URL.")
        return data

    def save(self, commit=True):
        server = super().save(commit=False)
        if self.cleaned_data.get("clear_bearer_token"):
            server.set_secret("")
        elif self.cleaned_data.get("bearer_token"):
            server.set_secret(self.cleaned_data["bearer_token"])
        if commit:
            server.save()
        return server


class McpToolInline(admin.TabularInline):
    model = McpTool
    extra = 0
    can_delete = False
    fields = ["name", "enabled_flag", "read_only", "short_description", "approval_flag"]
    readonly_fields = ["name", "enabled_flag", "read_only", "short_description", "approval_flag"]

    @admin.display(description="enabled", boolean=True)
    def enabled_flag(self, tool: McpTool) -> bool:
        return tool.enabled

    @admin.display(description="description")
    def short_description(self, tool: McpTool) -> str:
        return tool.description[:160]

    @admin.display(description="since approval")
    def approval_flag(self, tool: McpTool) -> str:
        if tool.changed_since_approval:
            return format_html('<strong style="color:#b00">{}</strong>', "CHANGED")
        return "approved" if tool.approved_fingerprint else "-"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    form = McpServerForm
    list_display = [
        "server_id", "name", "transport", "enabled", "connected", "tool_count",
        "changed_tools", "short_error", "approval_policy",
    ]  # fmt: skip
    list_filter = ["enabled", "transport", "connected"]
    search_fields = ["server_id", "name", "url"]
    readonly_fields = ["connected", "last_error", "tools_listed_at", "has_secret"]
    inlines = [McpToolInline]
    actions = ["refresh_tools", "enable_servers", "disable_servers"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tools")

    @admin.display(description="tools")
    def tool_count(self, server: McpServer) -> int:
        return len(server.tools.all())

    @admin.display(description="changed since approval")
    def changed_tools(self, server: McpServer) -> str:
        changed = [t.name for t in server.tools.all() if t.changed_since_approval]
        return ", ".join(changed) or "-"

    @admin.display(description="error")
    def short_error(self, server: McpServer) -> str:
        return server.last_error[:120]

    @admin.display(description="bearer token set", boolean=True)
    def has_secret(self, server: McpServer) -> bool:
        return bool(server.secret_encrypted)

    @admin.action(description="Refresh tools (reconnect and re-list)")
    def refresh_tools(self, request, queryset):
        # Under ASGI this runs on the server's event loop, where the live sessions are.
        async_to_sync(services.refresh_servers)()
        self.message_user(request, "Reconnected and re-listed tools.", messages.SUCCESS)

    @admin.action(description="Enable selected servers")
    def enable_servers(self, request, queryset):
        queryset.update(enabled=True)

    @admin.action(description="Disable selected servers")
    def disable_servers(self, request, queryset):
        queryset.update(enabled=False)


@admin.register(McpTool)
class McpToolAdmin(admin.ModelAdmin):
    """Per-tool enable toggles: the actions edit the server's disabled-tools list."""

    list_display = ["name", "server", "enabled_flag", "read_only", "approval_flag", "listed_at"]
    list_filter = ["server", "read_only"]
    search_fields = ["name", "description"]
    readonly_fields = [
        "server", "name", "description", "input_schema", "read_only", "fingerprint",
        "approved_fingerprint", "approved_at", "listed_at",
    ]  # fmt: skip
    actions = ["enable_tools", "disable_tools"]

    @admin.display(description="enabled", boolean=True)
    def enabled_flag(self, tool: McpTool) -> bool:
        return tool.enabled

    @admin.display(description="changed since approval", boolean=True)
    def approval_flag(self, tool: McpTool) -> bool:
        return tool.changed_since_approval

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Enable selected tools")
    def enable_tools(self, request, queryset):
        services.set_tools_enabled(list(queryset.select_related("server")), True)

    @admin.action(description="Disable selected tools")
    def disable_tools(self, request, queryset):
        services.set_tools_enabled(list(queryset.select_related("server")), False)
