/*
 * traffic.c - `quern traffic set|show|clear MODEL`: a model's traffic
 * policy in the registry (DESIGN.md section 4), which every serve replica
 * follows: weighted routes between aliases, sticky per user or header, and
 * a shadow alias that sees a fraction of requests off the request path.
 *
 *     quern traffic set churn production=90 candidate=10 --shadow challenger:0.5 --sticky user
 *     quern traffic show churn
 *     quern traffic clear churn      (back to: all traffic to production)
 *
 * The words are checked here for their form (exit 2 naming the word); the
 * registry checks the rest (weights summing to 100, aliases that exist) and
 * its 400 names the field.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

typedef struct traffic_opts {
    const char *name;
    cli_list routes;
    const char *shadow;
    const char *sticky;
    const char *auto_rules;
} traffic_opts;

static const cli_opt set_table[] = {
    {"MODEL", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model", offsetof(traffic_opts, name)},
    {"ROUTE", 0, CLI_LIST, NULL, 0, 0, NULL, 1,
     "ALIAS=WEIGHT, weights whole numbers summing to 100 (production=90 candidate=10)",
     offsetof(traffic_opts, routes)},
    {"shadow", 0, CLI_STR, NULL, 0, 0, NULL, 0,
     "ALIAS:FRACTION, also run that share of requests (0..1) on ALIAS, off the request path",
     offsetof(traffic_opts, shadow)},
    {"sticky", 0, CLI_STR, NULL, 0, 0, NULL, 0,
     "user (the request's \"user\" parameter or input) or header:NAME: one key, one alias",
     offsetof(traffic_opts, sticky)},
    {"auto", 0, CLI_STR, NULL, 0, 0, NULL, 0,
     "JSON or @FILE: the rules quern-monitor acts on, promotion and rollback "
     "({\"challenger\":\"candidate\",\"metric\":\"roc_auc\",\"rollback\":{\"latency_p95_ratio\":1.5}}; "
     "docs/registry.md lists the fields)",
     offsetof(traffic_opts, auto_rules)},
};

static const cli_opt name_table[] = {
    {"MODEL", 0, CLI_STR, NULL, 0, 0, NULL, 1, "the model", offsetof(traffic_opts, name)},
};

static int call(const char *method, const char *path, const json_t *body, json_t **out)
{
    qn_err err;
    int rc = qn_client_json(cli_client("registry"), method, path, body, NULL, out, &err);
    return rc < 0 ? cli_fail("registry", &err) : CLI_OK;
}

/* Prints a policy as the registry answers it. */
static void print_policy(const json_t *p)
{
    if (g_cli.json) {
        cli_print_json(p);
        return;
    }
    size_t i;
    json_t *r;
    printf("model    %s\n", cli_field(p, "model"));
    printf("routes  ");
    json_array_foreach(json_object_get(p, "routes"), i, r)
        printf(" %s=%lld", json_string_value(json_object_get(r, "alias")),
               (long long)json_integer_value(json_object_get(r, "weight")));
    printf("\n");
    const json_t *sh = json_object_get(p, "shadow");
    if (json_is_object(sh))
        printf("shadow   %s:%g\n", json_string_value(json_object_get(sh, "alias")),
               json_number_value(json_object_get(sh, "fraction")));
    else
        printf("shadow   -\n");
    printf("sticky   %s\n", cli_field(p, "sticky"));
    const json_t *au = json_object_get(p, "auto");
    char *rules = json_is_object(au) ? json_dumps(au, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    printf("auto     %s\n", rules ? rules : "-");
    free(rules);
    printf("policy   %s\n", json_is_true(json_object_get(p, "default")) ? "default (all traffic to production)"
                                                                          : cli_field(p, "updated_at"));
}

static int traffic_set(const void *opts)
{
    const traffic_opts *o = opts;
    json_t *routes = json_array(), *body = NULL, *out = NULL;
    int rc = CLI_USAGE;
    for (size_t i = 0; i < o->routes.n; i++) {
        const char *w = o->routes.v[i], *eq = strrchr(w, '=');
        char *end;
        errno = 0;
        long long weight = eq ? strtoll(eq + 1, &end, 10) : -1;
        if (!eq || eq == w || !eq[1] || *end || errno || weight < 0 || weight > 100) {
            cli_err("route \"%s\": expected ALIAS=WEIGHT with WEIGHT a whole number 0..100", w);
            goto out;
        }
        json_array_append_new(routes, json_pack("{s:s%, s:I}", "alias", w, (size_t)(eq - w), "weight",
                                                (json_int_t)weight));
    }
    body = json_pack("{s:O}", "routes", routes);
    if (o->shadow) {
        const char *colon = strrchr(o->shadow, ':');
        char *end;
        errno = 0;
        double f = colon ? strtod(colon + 1, &end) : -1;
        if (!colon || colon == o->shadow || !colon[1] || *end || errno || !(f >= 0 && f <= 1)) {
            cli_err("--shadow \"%s\": expected ALIAS:FRACTION with FRACTION from 0 to 1 (challenger:0.5)",
                    o->shadow);
            goto out;
        }
        json_object_set_new(body, "shadow", json_pack("{s:s%, s:f}", "alias", o->shadow,
                                                      (size_t)(colon - o->shadow), "fraction", f));
    }
    if (o->sticky) {
        if (strcmp(o->sticky, "user") != 0 && strncmp(o->sticky, "header:", 7) != 0) {
            cli_err("--sticky \"%s\": expected user or header:NAME", o->sticky);
            goto out;
        }
        json_object_set_new(body, "sticky", json_string(o->sticky));
    }
    if (o->auto_rules) {
        /* The registry checks every field and names the one at fault; here
         * only that it is a JSON object. */
        json_error_t je;
        json_t *au = o->auto_rules[0] == '@' ? json_load_file(o->auto_rules + 1, 0, &je)
                                             : json_loads(o->auto_rules, 0, &je);
        if (!json_is_object(au)) {
            if (au)
                cli_err("--auto: expected a JSON object of rules, not %s", o->auto_rules);
            else
                cli_err("--auto%s%s: not JSON at line %d column %d: %s", o->auto_rules[0] == '@' ? " " : "",
                        o->auto_rules[0] == '@' ? o->auto_rules + 1 : "", je.line, je.column, je.text);
            json_decref(au);
            goto out;
        }
        json_object_set_new(body, "auto", au);
    }
    if ((rc = call("PUT", cli_printf("/v1/models/%s/traffic", cli_enc(o->name)), body, &out)) == CLI_OK)
        print_policy(out);
out:
    json_decref(routes);
    json_decref(body);
    json_decref(out);
    return rc;
}

static int traffic_show(const void *opts)
{
    const traffic_opts *o = opts;
    json_t *out = NULL;
    int rc = call("GET", cli_printf("/v1/models/%s/traffic", cli_enc(o->name)), NULL, &out);
    if (rc == CLI_OK)
        print_policy(out);
    json_decref(out);
    return rc;
}

static int traffic_clear(const void *opts)
{
    const traffic_opts *o = opts;
    int rc = call("DELETE", cli_printf("/v1/models/%s/traffic", cli_enc(o->name)), NULL, NULL);
    if (rc == CLI_OK && !g_cli.json)
        printf("%s: traffic policy cleared; all traffic goes to production\n", o->name);
    else if (rc == CLI_OK)
        printf("{}\n");
    return rc;
}

const cli_cmd cli_cmd_traffic_set =
    CLI_CMD("traffic set", "route a model's traffic between aliases (canary, sticky, shadow)",
            "Every serve replica follows the policy within seconds, without a restart.", set_table, traffic_opts,
            traffic_set);
const cli_cmd cli_cmd_traffic_show =
    CLI_CMD("traffic show", "show a model's traffic policy", NULL, name_table, traffic_opts, traffic_show);
const cli_cmd cli_cmd_traffic_clear = CLI_CMD("traffic clear", "remove a model's traffic policy (all to production)",
                                              NULL, name_table, traffic_opts, traffic_clear);
