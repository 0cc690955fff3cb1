#!/usr/bin/env python3
"""Rebuild the committed colour product-image set ``data/product-icons/``.

The set is an ImageFolder layout (``<class>/<source>_<slug>.png``) assembled only from two
openly licensed sources that install offline from package registries:

* npm ``@lobehub/fluent-emoji-3d`` (MIT; Microsoft Fluent Emoji 3D renders, ``assets/*.webp``),
* Debian ``openclipart-svg`` (public-domain dedication; SVGs under ``/usr/share/openclipart/svg``).

The curated choice of images is data in this file (``EMOJI`` and ``CLIPART``): every entry was
picked by hand from contact sheets so that it clearly shows its class. No label-preserving
variants (flips, crops, recolours) are generated: each PNG comes from a distinct source file.

Each image is composited on white, cropped to its content, scaled (aspect preserved) to fit
``128 - 2 * MARGIN`` pixels, centred on a white 128x128 RGB canvas and saved as optimised PNG.
The build is deterministic: the same sources and library versions give byte-identical files.

Usage (scratch installs outside the repository)::

    mkdir -p /tmp/icons && (cd /tmp/icons && npm install @lobehub/fluent-emoji-3d@1.1.0)
    apt-get install -y openclipart-svg
    python -m venv /tmp/iconvenv && /tmp/iconvenv/bin/pip install cairosvg pillow
    E=/tmp/icons/node_modules/@lobehub/fluent-emoji-3d
    /tmp/iconvenv/bin/python scripts/build_product_icons.py --emoji-dir $E
    /tmp/iconvenv/bin/python scripts/build_product_icons.py --emoji-dir $E --check

The set itself needs none of this: only Pillow (or torchvision's ImageFolder) to read it.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import io
import json
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

SIZE = 128
MARGIN = 6
WHITE_THRESHOLD = 12  # a pixel differing from white by more than this counts as content
SVG_RENDER_PX = 1024  # longest side of the first SVG rendering

EMOJI_PACKAGE = "@lobehub/fluent-emoji-3d"
EMOJI_VERSION = "1.1.0"
CLIPART_PACKAGE = "openclipart-svg"
DEFAULT_EMOJI_DIR = Path("/tmp/icons/node_modules/@lobehub/fluent-emoji-3d")
DEFAULT_CLIPART_DIR = Path("/usr/share/openclipart/svg")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "product-icons"

STYLE = {"emoji": "3d-render", "clipart": "flat-clipart"}
LICENCE = {"emoji": "MIT", "clipart": "public-domain"}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "apparel": "clothing, footwear, headwear and bags",
    "beverages": "drinks in cups, glasses, bottles, cans and cartons; teapots",
    "computers": "desktop PCs, laptops, monitors, keyboards, mice, printers, scanners, "
    "disks and USB sticks",
    "electronics": "phones, cameras, camcorders, TVs, audio players, headphones, "
    "game controllers, PDAs and calculators",
    "fruit": "whole fruit and fruit slices",
    "musical_instruments": "string, wind, keyboard and percussion instruments",
    "sports_equipment": "balls, bats, rackets, gloves, skates, boards and other gear",
    "sweets": "cakes, pies, ice cream, candy and other desserts",
    "tools": "hand, garden and power tools, ladders and toolboxes",
}

# Curated data: class -> list of (asset file stem in @lobehub/fluent-emoji-3d/assets, slug).
# The slug is the emoji-datasource short name of that codepoint.
EMOJI: dict[str, list[tuple[str, str]]] = {
    "apparel": [
        ("1f453", "eyeglasses"),
        ("1f454", "necktie"),
        ("1f455", "shirt"),
        ("1f456", "jeans"),
        ("1f457", "dress"),
        ("1f458", "kimono"),
        ("1f45a", "womans_clothes"),
        ("1f45b", "purse"),
        ("1f45c", "handbag"),
        ("1f45e", "mans_shoe"),
        ("1f45f", "athletic_shoe"),
        ("1f460", "high_heel"),
        ("1f461", "sandal"),
        ("1f462", "boot"),
        ("1f392", "school_satchel"),
        ("1f3a9", "tophat"),
        ("1f452", "womans_hat"),
        ("1f9e2", "billed_cap"),
        ("1f9e3", "scarf"),
        ("1f9e4", "gloves"),
        ("1f9e5", "coat"),
        ("1f9e6", "socks"),
        ("1f97e", "hiking_boot"),
        ("1fa73", "shorts"),
        ("1f6cd-fe0f", "shopping_bags"),
        ("1f4bc", "briefcase"),
        ("1f9f3", "luggage"),
    ],
    "beverages": [
        ("1f375", "tea"),
        ("1f376", "sake"),
        ("1f377", "wine_glass"),
        ("1f378", "cocktail"),
        ("1f379", "tropical_drink"),
        ("1f37a", "beer"),
        ("1f37b", "beers"),
        ("1f37e", "champagne"),
        ("1f942", "clinking_glasses"),
        ("1f943", "tumbler_glass"),
        ("1f95b", "glass_of_milk"),
        ("1f964", "cup_with_straw"),
        ("1f9c3", "beverage_box"),
        ("1f9c9", "mate_drink"),
        ("1f9cb", "bubble_tea"),
        ("1fad6", "teapot"),
        ("2615", "coffee"),
    ],
    "computers": [
        ("1f4bb", "computer"),
        ("1f5a5-fe0f", "desktop_computer"),
        ("2328-fe0f", "keyboard"),
        ("1f5b1-fe0f", "three_button_mouse"),
        ("1f5b2-fe0f", "trackball"),
        ("1f5a8-fe0f", "printer"),
        ("1f4be", "floppy_disk"),
        ("1f4bf", "cd"),
        ("1f4c0", "dvd"),
    ],
    "electronics": [
        ("1f4f1", "iphone"),
        ("260e-fe0f", "phone"),
        ("1f4df", "pager"),
        ("1f4e0", "fax"),
        ("1f4f7", "camera"),
        ("1f4f8", "camera_with_flash"),
        ("1f4f9", "video_camera"),
        ("1f3a5", "movie_camera"),
        ("1f4fa", "tv"),
        ("1f4fb", "radio"),
        ("1f3a7", "headphones"),
        ("1f579-fe0f", "joystick"),
        ("1f3ae", "video_game"),
        ("1f4fd-fe0f", "film_projector"),
    ],
    "fruit": [
        ("1f347", "grapes"),
        ("1f348", "melon"),
        ("1f349", "watermelon"),
        ("1f34a", "tangerine"),
        ("1f34b", "lemon"),
        ("1f34c", "banana"),
        ("1f34d", "pineapple"),
        ("1f34e", "apple"),
        ("1f34f", "green_apple"),
        ("1f350", "pear"),
        ("1f351", "peach"),
        ("1f352", "cherries"),
        ("1f353", "strawberry"),
        ("1f95d", "kiwifruit"),
        ("1f965", "coconut"),
        ("1f96d", "mango"),
        ("1fad0", "blueberries"),
    ],
    "musical_instruments": [
        ("1f3b7", "saxophone"),
        ("1f3b8", "guitar"),
        ("1f3b9", "musical_keyboard"),
        ("1f3ba", "trumpet"),
        ("1f3bb", "violin"),
        ("1f941", "drum_with_drumsticks"),
        ("1fa87", "maracas"),
        ("1fa88", "flute"),
        ("1fa95", "banjo"),
        ("1fa97", "accordion"),
        ("1fa98", "long_drum"),
    ],
    "sports_equipment": [
        ("26bd", "soccer"),
        ("26be", "baseball"),
        ("1f94e", "softball"),
        ("1f3c0", "basketball"),
        ("1f3d0", "volleyball"),
        ("1f3c8", "football"),
        ("1f3c9", "rugby_football"),
        ("1f3be", "tennis"),
        ("1f94f", "flying_disc"),
        ("1f3b3", "bowling"),
        ("1f3cf", "cricket_bat_and_ball"),
        ("1f3d1", "field_hockey_stick_and_ball"),
        ("1f3d2", "ice_hockey_stick_and_puck"),
        ("1f94d", "lacrosse"),
        ("1f3d3", "table_tennis_paddle_and_ball"),
        ("1f3f8", "badminton_racquet_and_shuttlecock"),
        ("1f94a", "boxing_glove"),
        ("1f945", "goal_net"),
        ("26f8-fe0f", "ice_skate"),
        ("1f3a3", "fishing_pole_and_fish"),
        ("1f93f", "diving_mask"),
        ("1f3bf", "ski"),
        ("1f6f7", "sled"),
        ("1f94c", "curling_stone"),
        ("1f3b1", "8ball"),
    ],
    "sweets": [
        ("1f366", "icecream"),
        ("1f367", "shaved_ice"),
        ("1f368", "ice_cream"),
        ("1f369", "doughnut"),
        ("1f36a", "cookie"),
        ("1f36b", "chocolate_bar"),
        ("1f36c", "candy"),
        ("1f36d", "lollipop"),
        ("1f36e", "custard"),
        ("1f370", "cake"),
        ("1f382", "birthday"),
        ("1f9c1", "cupcake"),
        ("1f967", "pie"),
    ],
    "tools": [
        ("1f528", "hammer"),
        ("1f527", "wrench"),
        ("1fa93", "axe"),
        ("1fa9a", "carpentry_saw"),
        ("1fa9b", "screwdriver"),
        ("1f6e0-fe0f", "hammer_and_wrench"),
        ("2692-fe0f", "hammer_and_pick"),
        ("26cf-fe0f", "pick"),
        ("1f9f0", "toolbox"),
        ("1fa9c", "ladder"),
        ("1f5dc-fe0f", "compression"),
    ],
}

# Curated data: class -> SVG paths relative to the openclipart-svg root; the output slug is
# the file stem. Each was checked on a contact sheet; duplicates and doubtful ones were left out.
CLIPART: dict[str, list[str]] = {
    "apparel": [
        "containers/borsa_estiva_architetto__01.svg",
        "containers/valigie_bags_architetto__01.svg",
        "people/clothing/adventurer_hat_nicu_bucu_01.svg",
        "people/clothing/camicia_in_seta_architet_01.svg",
        "people/clothing/hats/baseball_cap_ganson.svg",
        "people/clothing/hats/blue_fedora.svg",
        "people/clothing/hats/hat_-_clothing_nicu_bucu_01.svg",
        "people/clothing/hats/hat_-_clothing_nicu_bucu_04.svg",
        "people/clothing/hats/hat_-_clothing_nicu_bucu_05.svg",
        "people/clothing/hats/sombrero_dave_pena_01.svg",
        "people/clothing/hiking_boot_jarno_vasama_.svg",
        "people/clothing/mitten_nathan_eady_01.svg",
        "people/clothing/sunglasses_01.svg",
        "people/clothing/t-shirt_01.svg",
        "people/clothing/tennis_shoe_jarno_vasama_.svg",
        "people/clothing/thongs_01.svg",
        "people/clothing/tie_-_clothing_nicu_bucu_01.svg",
        "people/clothing/tophat_benji_park_01.svg",
        "people/clothing/wild_summer_shorts_natha_01.svg",
        "people/clothing/winter_hat_nathan_eady_01.svg",
        "signs_and_symbols/money/portafoglio_architetto_f_01.svg",
        "transportation/little_tan_suitcase_jona_.svg",
        "unsorted/Attaccapanni_con_vestito_da_donna.svg",
        "unsorted/borsetta.svg",
        "unsorted/calzettoni.svg",
        "unsorted/vestito_rosa.svg",
        "unsorted/zaino_per_montagna.svg",
    ],
    "beverages": [
        "food/beverages/apple_juice_box.svg",
        "food/beverages/bottled_drink.svg",
        "food/beverages/coffee.svg",
        "food/beverages/coffee_ganson.svg",
        "food/beverages/cuppa_schwoo_01.svg",
        "food/beverages/drinking_glass_with_red_punch_01.svg",
        "food/beverages/ice_water_ganson.svg",
        "food/beverages/kubek_herbaty_-_mug_of__01.svg",
        "food/beverages/lattine_di_birra_archite_01.svg",
        "food/beverages/lemonade.svg",
        "food/beverages/lemonade_linda_kim_01.svg",
        "food/beverages/milk_carton_jarno_vasama_.svg",
        "food/beverages/milk_ganson.svg",
        "food/beverages/orange_juice_box.svg",
        "food/beverages/pop_can.svg",
        "food/beverages/soft_drink.svg",
        "food/beverages/softdrink_icon_01.svg",
        "food/beverages/tazza_di_caffe_architett_01.svg",
        "food/beverages/teacup_ganson.svg",
        "food/beverages/teapot_ganson.svg",
        "food/beverages/teiera_tazza_architetto__01.svg",
        "food/beverages/zielony_kubek_herbaty_-_01.svg",
        "food/juice_glass_andremarcel._01.svg",
        "recreation/party/wine_glass_christian_h._.svg",
        "tools/bottle_jean_victor_balin_.svg",
    ],
    "computers": [
        "computer/computer_zazou.svg",
        "computer/crt_monitor_01.svg",
        "computer/disquete_sergio_luiz_ara_01.svg",
        "computer/etiquette_cd-rom_01.svg",
        "computer/etiquette_laptop_01.svg",
        "computer/floppy.svg",
        "computer/floppy_disk_architetto_f_01.svg",
        "computer/green_computer_merzok_01.svg",
        "computer/hardware/computer-aj_aj_ashton_01.svg",
        "computer/hardware/computer.svg",
        "computer/hardware/computer2.svg",
        "computer/hardware/computer_keyboard_01.svg",
        "computer/hardware/doublesight_dual_monito_01.svg",
        "computer/hardware/etiquette_printer_01.svg",
        "computer/hardware/etiquette_scanner_01.svg",
        "computer/hardware/flat_screen_gino_rivera_01.svg",
        "computer/hardware/gnome-dev-harddisk.svg",
        "computer/hardware/keyboard.svg",
        "computer/hardware/laptop.svg",
        "computer/hardware/laptop_01.svg",
        "computer/hardware/laserprinter.svg",
        "computer/hardware/lcd_monitor_shandy_brown_.svg",
        "computer/hardware/monitor.svg",
        "computer/hardware/mouse.svg",
        "computer/hardware/mouse_scroll_fco._andrad_01.svg",
        "computer/hardware/printer.svg",
        "computer/hardware/printer_nicu_buculei_01.svg",
        "computer/hardware/schermo_macintosh_archit_01.svg",
        "computer/hardware/tower.svg",
        "computer/hardware/usb_memory_stick_01.svg",
        "computer/hardware/video1_sergio_luiz_arauj_01.svg",
        "computer/hardware/workstation_01.svg",
        "computer/notebook1_sergio_luiz_ar_02.svg",
        "computer/pc_box_sergio_luiz_arauj_02.svg",
        "computer/tft_screen_zazou.svg",
    ],
    "electronics": [
        "computer/classic_phone_zazou.svg",
        "computer/games/xbox-controller_01.svg",
        "computer/hardware/digital-camera_aj_ashton_01.svg",
        "computer/hardware/digital_camera_nicu_bucu_01.svg",
        "computer/hardware/gameboy_pocket_durex_r.svg",
        "computer/hardware/joystick_atari_style_da_r.svg",
        "computer/hardware/joystick_black_red_petri_01.svg",
        "computer/icons/nikon_coolpix_auban_.svg",
        "computer/joypad_the_mad_processor_.svg",
        "computer/pc_speaker_joel_montes_d_01.svg",
        "computer/pda_2_toh_yen_cheng_01.svg",
        "electronics/camcorder_jaime_sanchez1.svg",
        "electronics/camera_michael_tunniclif_01.svg",
        "electronics/macchina_fotografica_di_01.svg",
        "electronics/sony_clie_william_page_.svg",
        "electronics/telecamera_architetto_fr_01.svg",
        "electronics/television_alexander_d.__01.svg",
        "office/calculator.svg",
        "office/handphone_2_toh_yen_chen_01.svg",
        "office/telephone/cellular_phone_shandy_br_.svg",
        "office/telephone/mobile_phone_01.svg",
        "office/telephone/phone.svg",
        "office/telephone/red_telephone_mimooh_01.svg",
        "office/telephone/slim_cell_phone_israel_c_01.svg",
        "office/telephone/telefono_email_frolland_01.svg",
        "recreation/music/CD_Player/rca_stereo_cd_player_jo_r.svg",
        "recreation/music/boombox_linda_kim_01.svg",
        "recreation/music/headphones_davide_pesent_.svg",
        "recreation/televisore_telecomando_a_01.svg",
        "recreation/tv_01.svg",
    ],
    "fruit": [
        "food/fruit/an_apple_01.svg",
        "food/fruit/apple.svg",
        "food/fruit/apple_bitten_dan_gerhard_01.svg",
        "food/fruit/apple_wedge.svg",
        "food/fruit/banana.svg",
        "food/fruit/bananas_nicu_buculei_01.svg",
        "food/fruit/cherries.svg",
        "food/fruit/cherry_jonathan_dietrich_01.svg",
        "food/fruit/grapes_01.svg",
        "food/fruit/grapes_leif_lodahl_02.svg",
        "food/fruit/grapes_simple.svg",
        "food/fruit/green_pear_01.svg",
        "food/fruit/la_prugna_architetto_fra_01.svg",
        "food/fruit/lemon.svg",
        "food/fruit/lemon_half_ganson.svg",
        "food/fruit/lemon_wedge_ganson.svg",
        "food/fruit/lime_whole_ganson.svg",
        "food/fruit/melon_goneri_le_bouder_01.svg",
        "food/fruit/orange.svg",
        "food/fruit/orange_dave_pena_01.svg",
        "food/fruit/orange_slice_jonathan_di_01.svg",
        "food/fruit/pasteque_01.svg",
        "food/fruit/peach_simple.svg",
        "food/fruit/pear.svg",
        "food/fruit/pera_architetto_francesc_01.svg",
        "food/fruit/pesca_architetto_frances_01.svg",
        "food/fruit/pineapple.svg",
        "food/fruit/prune.svg",
        "food/fruit/strawberry.svg",
        "food/fruit/strawberry_jonathan_diet_01.svg",
        "food/fruit/watermelon_james_kilfige_01.svg",
    ],
    "musical_instruments": [
        "recreation/music/africandrum_benji_park1.svg",
        "recreation/music/africandrum_benji_park2.svg",
        "recreation/music/africandrum_benji_park_.svg",
        "recreation/music/bass_guitar_a.j._ashton_.svg",
        "recreation/music/cello_ganson.svg",
        "recreation/music/cello_mo_01.svg",
        "recreation/music/derbouk_jurgen_01.svg",
        "recreation/music/djambf_ganson.svg",
        "recreation/music/drums_jarno_vasamaa_.svg",
        "recreation/music/electric_guitar_andrea__01r.svg",
        "recreation/music/flute_ganson.svg",
        "recreation/music/french_horn_ganson.svg",
        "recreation/music/guitar_ganson.svg",
        "recreation/music/guitar_jarno_vasamaa1.svg",
        "recreation/music/guitar_jarno_vasamaa2.svg",
        "recreation/music/guitar_profile_philippe__01.svg",
        "recreation/music/harp1_ganson.svg",
        "recreation/music/harp2_ganson.svg",
        "recreation/music/harp3_ganson.svg",
        "recreation/music/harp_mo_01.svg",
        "recreation/music/maracas_ganson.svg",
        "recreation/music/mountain_dulcimer_terry_.svg",
        "recreation/music/oboe_ganson.svg",
        "recreation/music/piano_geraint_luff_01.svg",
        "recreation/music/saxophone_jarno_vasamaa_.svg",
        "recreation/music/tenor_trombone_ganson.svg",
        "recreation/music/trumpet_b_flat_colour_ganso.svg",
        "recreation/music/trumpet_herald__ganson.svg",
        "recreation/music/trumpet_pocket_colour_ganso.svg",
        "recreation/music/violin_colour_ganson.svg",
        "recreation/music/xylophone_ganson.svg",
    ],
    "sports_equipment": [
        "people/clothing/pattino_architetto_franc_01.svg",
        "recreation/rollerblades.svg",
        "recreation/scuba_tank_01.svg",
        "recreation/sledge_01.svg",
        "recreation/sports/8_ball_jarno_vasamaa.svg",
        "recreation/sports/8ball_form_jarno_vasama.svg",
        "recreation/sports/9_ball_jarno_vasamaa.svg",
        "recreation/sports/baseball_anthony_liekens_01.svg",
        "recreation/sports/baseball_bat_ganson.svg",
        "recreation/sports/baseball_glove_ganson.svg",
        "recreation/sports/basebalm_ganson.svg",
        "recreation/sports/blowling_ball_01.svg",
        "recreation/sports/cricket_bat_01.svg",
        "recreation/sports/dartboard_ruud_steltenpo_01.svg",
        "recreation/sports/football_ball_brice_boye_01.svg",
        "recreation/sports/football_helmet_gerald_g_01.svg",
        "recreation/sports/handball_ball_brice_boye_01.svg",
        "recreation/sports/rugby_brice_boyer_01.svg",
        "recreation/sports/soccer_ball_ganson.svg",
        "recreation/sports/table_tennis_omar_abo-na_01.svg",
        "recreation/sports/tennis_racket_01.svg",
        "recreation/sports/volley_ball_angelo_gelmi_01.svg",
        "recreation/toys/ball.svg",
        "recreation/toys/beach_ball_01.svg",
        "recreation/toys/surfboard_davek_01.svg",
    ],
    "sweets": [
        "food/breads_and_carbs/muffin_3.svg",
        "food/desserts/birthday_cake.svg",
        "food/desserts/cake1_jarno_vasamaa_01.svg",
        "food/desserts/cake_etienne_bersac_r.svg",
        "food/desserts/candy_01.svg",
        "food/desserts/candy_10.svg",
        "food/desserts/candy_20.svg",
        "food/desserts/candy_30.svg",
        "food/desserts/cone1_ganson.svg",
        "food/desserts/cone3_ganson.svg",
        "food/desserts/cone_alt1.svg",
        "food/desserts/cone_alt_2.svg",
        "food/desserts/cone_soft_chocolate.svg",
        "food/desserts/cone_soft_vanilla.svg",
        "food/desserts/flan_jean-victor_balin_01.svg",
        "food/desserts/flat_cake_jean-victor_ba_01.svg",
        "food/desserts/gateau_jean_victor_balin_.svg",
        "food/desserts/gauffre_au_chocolat_01.svg",
        "food/desserts/gelato_all_39_italiana_a_01.svg",
        "food/desserts/glace_01_jean-victor_bal_01.svg",
        "food/desserts/glace_03_jean-victor_bal_01.svg",
        "food/desserts/glace_06_jean-victor_bal_01.svg",
        "food/desserts/glace_7_jean-victor_bali_01.svg",
        "food/desserts/glace_italienne_jean-vic_01.svg",
        "food/desserts/ice_cream_cone_linda_kim_01.svg",
        "food/desserts/lollipop_dave_pena_01.svg",
        "food/desserts/muffin_jean_victor_balin_.svg",
        "food/desserts/pie_apple.svg",
        "food/desserts/pink_cake_gabrielle_now_r.svg",
        "food/desserts/pudim_valessio_soares_de_.svg",
        "food/desserts/torta_architetto_frances_01.svg",
    ],
    "tools": [
        "tools/axe_peterm_.svg",
        "tools/blacksmith_hammer_ganson.svg",
        "tools/brush_roller_costea_bogd_01.svg",
        "tools/bypasslopper_benji_park_01.svg",
        "tools/construction_hammer_jon__01.svg",
        "tools/cultivator_benji_park_01.svg",
        "tools/drill_peterm_.svg",
        "tools/hammer_nicu_buculei_01.svg",
        "tools/hammer_peterm1.svg",
        "tools/hedgeshear_benji_park_01.svg",
        "tools/leafrake_benji_park_01.svg",
        "tools/livella_architetto_franc_01.svg",
        "tools/nail_puller_peterm_.svg",
        "tools/paint_brush_costea_bogda_01.svg",
        "tools/paint_roller_gerald_g._01.svg",
        "tools/roundpointshovel_benji_p_01.svg",
        "tools/saw_peterm_.svg",
        "tools/screwdriver_peterm_.svg",
        "tools/simple_shovel_jeff_simps_01.svg",
        "tools/spaclu_costea_bogdan_01.svg",
        "tools/tool.svg",
        "tools/tools_nicu_buculei_01.svg",
        "tools/trowel_benji_park_01.svg",
        "tools/utensile_sega_architetto_01.svg",
        "tools/utensili_chiave_e_cacci_01.svg",
        "tools/wooden_mallot_benji_park_.svg",
        "unsorted/metro_avvolgibile.svg",
        "unsorted/motosega.svg",
        "unsorted/pinzatrice_grigia.svg",
        "unsorted/scala_doppia.svg",
        "unsorted/sega_per_legno.svg",
    ],
}


MIT_TEXT = """Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE."""

PD_TEXT = """creative commons Public Domain Dedication

Copyright-Only Dedication (based on United States law) or Public Domain
Certification

The person or persons who have associated work with this document (the
"Dedicator" or "Certifier") hereby either (a) certifies that, to the best
of his knowledge, the work of authorship identified is in the public
domain of the country from which the work is published, or (b) hereby
dedicates whatever copyright the dedicators holds in the work of authorship
identified below (the "Work") to the public domain. [...]

Dedicator recognizes that, once placed in the public domain, the Work may be
freely reproduced, distributed, transmitted, used, modified, built upon, or
otherwise exploited by anyone for any purpose, commercial or non-commercial,
and in any way, including by methods that have not yet been invented or
conceived."""


class SourceMissingError(RuntimeError):
    """A source package (or Python dependency) needed for the build is not installed."""


def _import_deps() -> tuple[Any, Any]:
    """Import cairosvg and Pillow lazily, with an actionable error if they are missing."""
    try:
        import cairosvg
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SourceMissingError(
            f"{exc}. Install the build dependencies, e.g. "
            "`python -m venv /tmp/iconvenv && /tmp/iconvenv/bin/pip install cairosvg pillow` "
            "(cairosvg needs the system library libcairo2)."
        ) from exc
    return cairosvg, Image


def check_sources(emoji_dir: Path, clipart_dir: Path) -> dict[str, str]:
    """Verify both sources exist and return facts about them for the attribution file."""
    assets = emoji_dir / "assets"
    pkg_json = emoji_dir / "package.json"
    if not assets.is_dir() or not pkg_json.is_file():
        raise SourceMissingError(
            f"npm package {EMOJI_PACKAGE} not found at {emoji_dir} (need assets/ and "
            f"package.json). Install it outside the repo: `mkdir -p /tmp/icons && cd /tmp/icons "
            f"&& npm install {EMOJI_PACKAGE}@{EMOJI_VERSION}`, then pass --emoji-dir."
        )
    meta = json.loads(pkg_json.read_text(encoding="utf-8"))
    if meta.get("name") != EMOJI_PACKAGE or meta.get("license") != "MIT":
        raise SourceMissingError(f"{pkg_json} is not the MIT-licensed {EMOJI_PACKAGE} package")
    if meta.get("version") != EMOJI_VERSION:
        print(
            f"warning: {EMOJI_PACKAGE} version {meta.get('version')} != expected "
            f"{EMOJI_VERSION}; output may differ from the committed set",
            file=sys.stderr,
        )
    if not clipart_dir.is_dir():
        raise SourceMissingError(
            f"openclipart SVG folder {clipart_dir} not found. Install the Debian package: "
            f"`apt-get install -y {CLIPART_PACKAGE}`, or pass --clipart-dir."
        )
    missing = [
        str(assets / f"{stem}.webp")
        for items in EMOJI.values()
        for stem, _ in items
        if not (assets / f"{stem}.webp").is_file()
    ] + [
        str(clipart_dir / rel)
        for items in CLIPART.values()
        for rel in items
        if not (clipart_dir / rel).is_file()
    ]
    if missing:
        raise SourceMissingError(
            f"{len(missing)} curated source files are missing, e.g. {missing[:3]}; check the "
            f"{EMOJI_PACKAGE} / {CLIPART_PACKAGE} installs"
        )
    return {"emoji_version": str(meta.get("version"))}


def slugify(text: str) -> str:
    """Lowercase ASCII slug: runs of characters other than [a-z0-9] become one underscore."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def fit_on_white(rgba: Any, image_mod: Any) -> Any:
    """Composite on white, crop to content, fit inside the margin and centre on a white tile."""
    rgba = rgba.convert("RGBA")
    flat = image_mod.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    rgb = flat.convert("RGB")
    bbox = content_bbox(rgb, image_mod)
    if bbox is not None:
        rgb = rgb.crop(bbox)
    inner = SIZE - 2 * MARGIN
    scale = inner / max(rgb.width, rgb.height)
    new_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    rgb = rgb.resize(new_size, image_mod.Resampling.LANCZOS)
    tile = image_mod.new("RGB", (SIZE, SIZE), (255, 255, 255))
    tile.paste(rgb, ((SIZE - rgb.width) // 2, (SIZE - rgb.height) // 2))
    return tile


def content_bbox(rgb: Any, image_mod: Any) -> tuple[int, int, int, int] | None:
    """Bounding box of pixels that differ visibly from white."""
    from PIL import ImageChops

    white = image_mod.new("RGB", rgb.size, (255, 255, 255))
    diff = ImageChops.difference(rgb, white).convert("L")
    mask = diff.point(lambda v: 255 if v > WHITE_THRESHOLD else 0)
    return mask.getbbox()


def render_svg(path: Path, cairosvg: Any, image_mod: Any) -> Any:
    """Render an SVG to RGBA so that its visible content is at least ~2x the tile size."""

    def _render(**kwargs: Any) -> Any:
        png = cairosvg.svg2png(url=str(path), **kwargs)
        return image_mod.open(io.BytesIO(png)).convert("RGBA")

    native = _render()
    scale = SVG_RENDER_PX / max(native.width, native.height)
    im = _render(scale=scale)
    flat = image_mod.new("RGBA", im.size, (255, 255, 255, 255))
    flat.alpha_composite(im)
    bbox = content_bbox(flat.convert("RGB"), image_mod)
    if bbox is not None:
        content = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
        if 0 < content < 2 * SIZE:  # small drawing on a large canvas: render sharper
            factor = min(2 * SIZE / content, 8.0)
            im = _render(scale=scale * factor)
    return im


def build(emoji_dir: Path, clipart_dir: Path, out: Path) -> list[dict[str, str]]:
    """Render every curated image into ``out`` and write the manifest and docs there."""
    cairosvg, image_mod = _import_deps()
    facts = check_sources(emoji_dir, clipart_dir)
    facts["tools"] = f"CairoSVG {cairosvg.__version__} and Pillow {image_mod.__version__}"
    rows: list[dict[str, str]] = []
    out.mkdir(parents=True, exist_ok=True)
    for label in sorted(set(EMOJI) | set(CLIPART)):
        (out / label).mkdir(exist_ok=True)
        jobs: list[tuple[str, str, str]] = []  # (source, slug, origin)
        for stem, name in EMOJI.get(label, []):
            jobs.append(("emoji", slugify(name), f"{EMOJI_PACKAGE}/assets/{stem}.webp"))
        for rel in CLIPART.get(label, []):
            # origin is the canonical Debian path, whatever --clipart-dir was used
            jobs.append(("clipart", slugify(Path(rel).stem), str(DEFAULT_CLIPART_DIR / rel)))
        for source, slug, origin in sorted(jobs):
            rel_path = f"{label}/{source}_{slug}.png"
            if any(r["path"] == rel_path for r in rows):
                raise ValueError(f"duplicate output name {rel_path}")
            if source == "emoji":
                src = emoji_dir / "assets" / Path(origin).name
                with image_mod.open(src) as im:
                    tile = fit_on_white(im, image_mod)
            else:
                src = clipart_dir / Path(origin).relative_to(DEFAULT_CLIPART_DIR)
                tile = fit_on_white(render_svg(src, cairosvg, image_mod), image_mod)
            tile.save(out / rel_path, "PNG", optimize=True)
            rows.append(
                {
                    "path": rel_path,
                    "label": label,
                    "source": source,
                    "style": STYLE[source],
                    "origin": origin,
                    "licence": LICENCE[source],
                }
            )
    with (out / "MANIFEST.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "ATTRIBUTION.md").write_text(attribution_md(rows, facts), encoding="utf-8")
    (out / "README.md").write_text(readme_md(rows), encoding="utf-8")
    return rows


def count_table(rows: list[dict[str, str]]) -> str:
    """Markdown table of per-class counts by style."""
    counts = Counter((r["label"], r["source"]) for r in rows)
    labels = sorted({r["label"] for r in rows})
    lines = [
        "| class | emoji (3D render) | clipart (flat) | total | what it contains |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for lab in labels:
        e, c = counts[(lab, "emoji")], counts[(lab, "clipart")]
        lines.append(f"| {lab} | {e} | {c} | {e + c} | {CLASS_DESCRIPTIONS[lab]} |")
    te = sum(v for (_, s), v in counts.items() if s == "emoji")
    tc = sum(v for (_, s), v in counts.items() if s == "clipart")
    lines.append(f"| **all** | {te} | {tc} | {te + tc} | |")
    return "\n".join(lines)


def readme_md(rows: list[dict[str, str]]) -> str:
    """Short README for the data folder."""
    n_classes = len({r["label"] for r in rows})
    return f"""# product-icons

A small colour product-image classification set in ImageFolder layout
(`<class>/<source>_<slug>.png`): {len(rows)} RGB PNG images, 128x128, object centred on white,
{n_classes} classes. Every class mixes two art styles: Microsoft Fluent Emoji 3D renders
(`emoji_*`) and flat public-domain clip art from openclipart (`clipart_*`), so a model
cannot separate classes by style alone, and style shift can be studied (train on one style,
test on the other; the `source`/`style` columns of `MANIFEST.csv` make that split easy).
Each image comes from a distinct source file: there are no augmented variants.

{count_table(rows)}

`MANIFEST.csv` lists `path,label,source,style,origin,licence` for every image.
Licences: emoji images MIT, clip art public domain; see `ATTRIBUTION.md`.
Rebuilt by `scripts/build_product_icons.py` (not needed to use the set).
"""


def attribution_md(rows: list[dict[str, str]], facts: dict[str, str]) -> str:
    """Attribution, licences and build notes."""
    return f"""# Attribution and licences for data/product-icons

Every image in this folder is derived (composited on white, cropped, scaled to 128x128) from
one of the two sources below. `MANIFEST.csv` names the exact source file of each image in its
`origin` column and its licence in the `licence` column.

## 1. Fluent Emoji 3D renders: files `*/emoji_*.png` (licence: MIT)

* Source: npm package `{EMOJI_PACKAGE}` version {facts["emoji_version"]},
  files `assets/<codepoint>.webp` (256x256 RGBA, lowercase hex codepoints joined by `-`).
  Repackaged by LobeHub from Microsoft's Fluent Emoji (github.com/microsoft/fluentui-emoji).
* The npm package declares `"license": "MIT"` in its `package.json`, and its README says:
  "Copyright © 2023 LobeHub. This project is MIT licensed." The package ships no separate
  LICENSE file.
* Upstream, Microsoft publishes Fluent Emoji under the MIT licence with the notice
  "Copyright (c) Microsoft Corporation." (this notice is not included in the npm package;
  it is quoted here from the upstream project's licence).
* Emoji names (slugs) are the short names from the npm package `emoji-datasource`
  (MIT, Copyright (c) 2013 Cal Henderson), used only as metadata; none of its images
  (nor any Apple, Google, Twitter or Facebook emoji images) are used.

MIT licence text, which applies with both copyright lines above
("Copyright (c) 2023 LobeHub" and "Copyright (c) Microsoft Corporation"):

```
{MIT_TEXT}
```

## 2. Open Clip Art Library: files `*/clipart_*.png` (licence: public domain)

* Source: Debian package `{CLIPART_PACKAGE}` (version 1:0.18+dfsg-19 was used), SVG files
  under `/usr/share/openclipart/svg/<category>/...`, rendered with CairoSVG.
* Licence: the Creative Commons Public Domain Dedication / Certification, as stated in the
  package's `/usr/share/doc/openclipart-svg/copyright` (openclipart.org's artists dedicated
  their work to the public domain; today's equivalent is CC0). Excerpt:

```
{PD_TEXT}
```

No attribution is legally required for these images; the `origin` column keeps the
original file names (which often include the artist's name) for credit anyway.
Some drawings depict branded products (e.g. a games-console controller or a camera with a
maker's name); only the drawings are public domain, not any trademarks they show.

## How the set was built

`scripts/build_product_icons.py` holds the curated list of emoji codepoints and SVG paths for
each class. They were chosen by hand from contact sheets of the candidate images: the emoji
mainly from the matching emoji-datasource subcategories (fruit, drink, food-sweet, computer, phone,
light & video, musical-instrument, tool, clothing, sport), the clip art from
openclipart folders (food/fruit, food/beverages, food/desserts, computer/hardware,
electronics, office/telephone, recreation/music, recreation/sports, tools, people/clothing,
plus a few files from other folders). Images whose label was doubtful were dropped (a juice
box among the fruit, ice cubes among the drinks, books, jewellery, networking gear, weapons,
logos, barcode-label icons), as were exact duplicates (same file content or the same drawing
filed twice), black-and-white copies of colour drawings (`*_bw`), and recoloured copies
of the same drawing. Each remaining image comes from a distinct source file; no
augmentation or label-preserving variants were added.

Processing: the image (SVGs rendered with CairoSVG at a resolution at least twice the tile)
is alpha-composited on white, cropped to the bounding box of non-white pixels, resized with
Lanczos filtering (aspect ratio kept) to fit {SIZE - 2 * MARGIN}x{SIZE - 2 * MARGIN} px,
centred on a white {SIZE}x{SIZE} RGB canvas and saved as an optimised PNG
(built with {facts["tools"]}; other versions may give slightly different bytes).

## Counts

{count_table(rows)}
"""


def check(emoji_dir: Path, clipart_dir: Path, out: Path) -> int:
    """Rebuild into a temporary folder and compare byte for byte with ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "product-icons"
        build(emoji_dir, clipart_dir, fresh)
        want = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file())
        have = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        problems = sorted(set(want) ^ set(have))
        problems += [
            f for f in want if f in have and not filecmp.cmp(fresh / f, out / f, shallow=False)
        ]
    for p in problems:
        print(f"differs: {p}", file=sys.stderr)
    print(f"{len(want)} files rebuilt, {len(problems)} differ")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--emoji-dir",
        type=Path,
        default=DEFAULT_EMOJI_DIR,
        help=f"installed npm package {EMOJI_PACKAGE} (default: {DEFAULT_EMOJI_DIR})",
    )
    parser.add_argument(
        "--clipart-dir",
        type=Path,
        default=DEFAULT_CLIPART_DIR,
        help=f"SVG root of the Debian package {CLIPART_PACKAGE} (default: {DEFAULT_CLIPART_DIR})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--check", action="store_true", help="rebuild in a temp dir and compare with --out"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            return check(args.emoji_dir, args.clipart_dir, args.out)
        out: Path = args.out
        if out.exists() and any(out.iterdir()) and not (out / "MANIFEST.csv").is_file():
            parser.error(f"{out} is not empty and has no MANIFEST.csv; refusing to overwrite")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            staged = Path(tmp) / out.name
            rows = build(args.emoji_dir, args.clipart_dir, staged)
            if out.exists():
                shutil.rmtree(out)
            staged.rename(out)
    except SourceMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
